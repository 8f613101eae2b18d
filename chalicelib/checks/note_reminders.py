"""Note reminders: on a note's remind date, remind its author and its application's BDM.

A reminder missed by downtime is still sent for up to ``note_catch_up_days``
after the remind date; older ones are not.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import date, timedelta

from chalicelib import registry
from chalicelib.checks import Check, Kind
from chalicelib.delivery import Notice, deliver
from chalicelib.formatting import au_date, one_line
from chalicelib.limits import quoted
from chalicelib.mailer import Email, Recipient, render
from chalicelib.models import Application, Note, Staff
from chalicelib.run import Part, Run

NAME = registry.declared_in(__name__)

NOTE_REMINDER = Kind(
    "note_reminders", NAME, "note_reminder", ("note_id", "remind_date", "recipient_id")
)


def run(run: Run) -> None:
    """Remind authors and BDMs of today's (and recently missed) notes."""
    deliver(run, collect(run))


def collect(run: Run) -> list[Notice[None]]:
    """Query the remind dates in the catch-up window and build one notice per person."""
    # Each note with the day it was found under: its remind_date is that day's ISO date.
    notes: list[tuple[Note, date]] = []
    for back in range(run.settings.thresholds.note_catch_up_days + 1):
        day = run.today - timedelta(days=back)
        for note in Note.by_remind_date.query(day.isoformat()):
            run.summary.items_read += 1
            if note.load_error:
                run.invalid(note.id, note.load_error)
                continue
            notes.append((note, day))

    applications = run.fetch(Application, (n.application_id for n, _ in notes))
    staff = run.fetch(
        Staff,
        [n.created_by for n, _ in notes]
        + [a.bd_id for a in applications.values() if not a.load_error],
    )
    notices: list[Notice[None]] = []
    for note, remind_date in notes:
        notices.extend(_notices_for(run, note, remind_date, applications, staff))
    return notices


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
                compose=_composer(note, recipient, role, reference, au_date(remind_date)),
            )
        )
    return notices


def _composer(
    note: Note, recipient: Recipient, role: str, reference: str | None, remind_date: str
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
        )

    return compose


CHECK = Check(NAME, run, "note_reminders_start", (NOTE_REMINDER,))
