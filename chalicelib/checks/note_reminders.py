"""Note reminders: on a note's remind date, remind its author and its application's BDM.

A reminder missed by downtime is still sent for up to ``note_catch_up_days``
after the remind date; older ones are not.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException, UpdateError

from chalicelib import ledger, registry, schedule
from chalicelib.checks import Check, Kind
from chalicelib.config import Lender
from chalicelib.delivery import Notice, deliver
from chalicelib.formatting import au_date, one_line, parse_date
from chalicelib.limits import quoted
from chalicelib.mailer import Email, Recipient, render
from chalicelib.models import NOTES_PENDING, Application, Note, Staff
from chalicelib.observability import logger
from chalicelib.run import Part, Run

NAME = registry.declared_in(__name__)
# The ledger-table records of a remind date's settled notes (not notices) start with this.
SETTLED_PREFIX = "done#"

# What one run adds to one record at most (beyond it the notes are read the longer way).
MAX_RECORDED_CHARS = 300_000

NOTE_REMINDER = Kind(
    "note_reminders", NAME, "note_reminder", ("note_id", "remind_date", "recipient_id")
)


# A remind date's record of settled notes is spread over this many entries (each
# stays far below DynamoDB's 400 KB item limit up to ~100,000 notes a day).
DONE_SHARDS = 16


def run(run: Run) -> None:
    """Remind authors and BDMs of today's (and recently missed) notes."""
    notices, pending, already = collect(run)
    outcome = deliver(run, notices)
    if not run.dry_run:
        settled = _record_settled(pending, outcome)
        _unmark([*already, *settled])


@dataclass(frozen=True)
class Pending:
    """A note read the longer way this run: its day, recipients and ledger keys.

    ``clean``: nothing about it was reported, so once every key is sent it is settled.
    """

    note_id: str
    day: date
    remind_date: str
    author: str
    bd_id: str
    keys: tuple[str, ...]
    clean: bool


def collect(run: Run) -> tuple[list[Notice[None]], list[Pending], list[tuple[str, str]]]:
    """Query the pending notes of the catch-up window and build one notice per person.

    One Query of the sparse pending index covers every day of the window: a note
    leaves it once its reminders were all sent (``_unmark``), so the handled notes
    of a day are not read again. A note whose reminders were all sent, to the author
    and BDM it still has, is in its remind date's record of settled notes: it is
    counted as due and skipped without reading its people or its ledger entries,
    and returned (id, remind date) to leave the index.
    """
    days = [
        run.today - timedelta(days=back)
        for back in range(run.settings.thresholds.note_catch_up_days + 1)
    ]
    # Each note with its remind date (inside the window: the Query's range).
    notes: list[tuple[Note, date]] = []
    found = Note.by_pending.query(
        NOTES_PENDING, Note.remind_date.between(days[-1].isoformat(), days[0].isoformat())
    )
    for note in found:
        run.summary.items_read += 1
        if note.load_error:
            run.invalid(note.id, note.load_error)
            continue
        try:
            # A YYYY-MM-DD string inside the Query's range is one of the window's days.
            day = parse_date(note.remind_date, "remind_date")
        except ValueError as exc:
            run.invalid(note.id, str(exc))
            continue
        notes.append((note, day))

    applications = run.fetch(Application, (n.application_id for n, _ in notes))
    settled = _settled(days) if notes else {}
    unsettled: list[tuple[Note, date]] = []
    already: list[tuple[str, str]] = []
    for note, day in notes:
        as_settled = _settled_as(note, day, applications)
        count = settled.get(as_settled) if as_settled is not None else None
        if count is None:
            unsettled.append((note, day))
        else:
            run.summary.notices_due += count
            run.summary.skipped += count
            already.append((note.id, day.isoformat()))
    staff = run.fetch(
        Staff,
        [n.created_by for n, _ in unsettled]
        + [
            applications[n.application_id].bd_id
            for n, _ in unsettled
            if n.application_id in applications and not applications[n.application_id].load_error
        ],
    )
    notices: list[Notice[None]] = []
    pending: list[Pending] = []
    for note, remind_date in unsettled:
        reported = run.summary.invalid
        made = _notices_for(run, note, remind_date, applications, staff)
        notices.extend(made)
        as_settled = _settled_as(note, remind_date, applications)
        if as_settled is not None and made:
            pending.append(
                Pending(
                    note.id,
                    remind_date,
                    remind_date.isoformat(),
                    as_settled[2],
                    as_settled[3],
                    tuple(p.key for n in made for p in n.parts),
                    clean=run.summary.invalid == reported,
                )
            )
    return notices, pending, already


def _settled_as(
    note: Note, day: date, applications: dict[str, Application]
) -> tuple[str, str, str, str] | None:
    """(day, note, author, BDM) as the record of settled notes has them; None: no record."""
    bd_id = ""
    if note.application_id:
        app = applications.get(note.application_id)
        if app is None or app.load_error:
            return None  # reported at every run, as before
        bd_id = app.bd_id or ""
    return (day.isoformat(), note.id, note.created_by or "", bd_id)


def _record_key(day: str, shard: int) -> str:
    return SETTLED_PREFIX + ledger.notice_key(NAME, day, shard)


def _shard_key(day: str, note_id: str) -> str:
    """The record a note of ``day`` is in: by a stable hash of its id."""
    return _record_key(day, zlib.crc32(note_id.encode()) % DONE_SHARDS)


def _settled(days: list[date]) -> dict[tuple[str, str, str, str], int]:
    """The settled notes of ``days``: (day, note, author, BDM) -> how many reminders it had."""
    keys = {
        _record_key(day.isoformat(), shard): day.isoformat()
        for day in days
        for shard in range(DONE_SHARDS)
    }
    settled: dict[tuple[str, str, str, str], int] = {}
    for key, elements in schedule.string_sets(list(keys)).items():
        for element in elements:
            parts = [_unescape(p) for p in element.split("#")]
            if len(parts) == 4 and parts[3].isdigit():
                settled[(keys[key], parts[0], parts[1], parts[2])] = int(parts[3])
    return settled


def _unescape(part: str) -> str:
    return part.replace("%23", "#").replace("%25", "%")


def _record_settled(pending: list[Pending], outcome: dict[str, str]) -> list[tuple[str, str]]:
    """Add each note whose reminders all went out to its remind date's record.

    Only notes nothing was reported about: a note with a problem is read again at
    every run and reported, as before. Returns those notes (id, remind date).
    """
    by_shard: dict[str, set[str]] = {}
    settled: list[tuple[str, str]] = []
    for item in pending:
        if item.clean and item.keys and all(outcome.get(k) == ledger.SENT for k in item.keys):
            key, element = settled_element(
                item.note_id, item.day, item.author, item.bd_id, len(item.keys)
            )
            by_shard.setdefault(key, set()).add(element)
            settled.append((item.note_id, item.remind_date))
    for key, elements in by_shard.items():
        if sum(len(e) for e in elements) >= MAX_RECORDED_CHARS:
            continue
        try:
            schedule.add_to_set(key, elements)
        except (PynamoDBException, ClientError) as exc:
            # A full record (DynamoDB's 400 KB) or a failed write only means these
            # notes are read the longer way next run.
            logger.warning(
                "settled notes not recorded",
                extra={"check": NAME, "key": key, "error": type(exc).__name__},
            )
    return settled


def _unmark(notes: list[tuple[str, str]]) -> None:
    """Take settled notes out of the pending index: one conditional UpdateItem each.

    Only while the note still has the remind date it was settled for: a date the
    CRM changed in between keeps the mark it wrote, so the new date is reminded.
    A note deleted meanwhile is not recreated.
    """
    for note_id, remind_date in notes:
        try:
            Note(id=note_id).update(
                actions=[Note.pending_check.remove()],
                condition=Note.remind_date == remind_date,
            )
        except (PynamoDBException, ClientError) as exc:
            # A changed or deleted note (the condition), or a failed write: the note
            # stays pending and is read, and skipped as settled, at the next run.
            logger.info(
                "settled note left pending",
                extra={"check": NAME, "item_id": note_id, "error": type(exc).__name__},
            )


def settled_element(
    note_id: str, day: date, author: str, bd_id: str, reminders: int
) -> tuple[str, str]:
    """The record a settled note goes in, and its element there (note, author, BDM, count)."""
    element = ledger.notice_key(note_id, author, bd_id, reminders)
    return _shard_key(day.isoformat(), note_id), element


def forget_settled(entry_key: str) -> None:
    """Read a re-queued reminder's note the longer way again (``retry-failed``).

    ``entry_key`` is the reminder's ledger key: its note and remind date name the
    record of settled notes it may be in, and the note is marked pending again.
    """
    parts = entry_key.split("#")
    if len(parts) == 4 and parts[0] == NAME:
        note_id = _unescape(parts[1])
        schedule.forget_set(_shard_key(parts[2], note_id))
        try:
            # Back in the pending index, while the note still has that remind date.
            Note(id=note_id).update(
                actions=[Note.pending_check.set(NOTES_PENDING)],
                condition=Note.remind_date == parts[2],
            )
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise


def _notices_for(
    run: Run,
    note: Note,
    remind_date: date,
    applications: dict[str, Application],
    staff: dict[str, Staff],
) -> list[Notice[None]]:
    reference = None
    bd_id = None
    if note.application_id:
        app = applications.get(note.application_id)
        if app is None or app.load_error:
            run.invalid(note.id, f"application {quoted(note.application_id)} does not exist")
            return []
        reference = app.reference_number or note.application_id
        bd_id = app.bd_id

    wanted = [(note.created_by, "author"), (bd_id, "BDM")]
    if not any(person_id for person_id, _ in wanted):
        run.invalid(note.id, "note has neither an author (created_by) nor a BDM to remind")
        return []
    notices: list[Notice[None]] = []
    seen: set[str] = set()
    for person_id, role in wanted:
        if not person_id:
            continue
        recipient = run.recipient(staff.get(person_id), role, person_id, for_item=note.id)
        if recipient is None:
            continue
        if recipient.id in seen or recipient.email.lower() in seen:
            continue
        seen.update({recipient.id, recipient.email.lower()})
        key = NOTE_REMINDER.key(note.id, remind_date.isoformat(), recipient.id)
        part = run.part(key, note.id, None)
        if part is None:
            continue
        notices.append(
            Notice(
                kind=NOTE_REMINDER.name,
                recipient=recipient,
                parts=[part],
                compose=_composer(
                    note, recipient, role, reference, au_date(remind_date), run.settings.lender
                ),
            )
        )
    return notices


def _composer(
    note: Note,
    recipient: Recipient,
    role: str,
    reference: str | None,
    remind_date: str,
    lender: Lender,
) -> Callable[[Sequence[Part[None]]], Email]:
    title = one_line(note.title or "") or "Untitled note"

    def compose(parts: Sequence[Part[None]]) -> Email:
        return render(
            NOTE_REMINDER.template,
            recipient,
            f"Note Reminder: {title}",
            {
                "title": title,
                "content": note.content or "",
                "reference": reference,
                "remind_date": remind_date,
                "role": role,
            },
            lender=lender,
        )

    return compose


CHECK = Check(NAME, run, "note_reminders_start", (NOTE_REMINDER,))
