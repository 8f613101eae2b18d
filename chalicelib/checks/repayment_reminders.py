"""Repayment reminders: before the due date and when overdue, to borrowers, then the BDM.

With ``d = today - due_date`` (defaults in brackets) an unpaid repayment gets:
``upcoming`` (-7 <= d <= 0), ``overdue_3_day`` (3 <= d < 7), ``overdue_7_day``
(7 <= d < 10), each to every borrower, and ``overdue_10_day`` (10 <= d <= 17) to
the BDM. The windows do not overlap, so a run sends at most one kind per
repayment and a kind whose window passed during downtime is never sent late.
A BDM gets one escalation digest per run, a row per repayment (each row its own
ledger entry, as in the stale digest).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from enum import Enum

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException, UpdateError
from pynamodb.expressions.update import Action

from chalicelib import ledger, registry
from chalicelib.checks import Check, Kind
from chalicelib.config import Lender, Thresholds
from chalicelib.delivery import Notice, deliver
from chalicelib.formatting import au_date, money, parse_amount, parse_date
from chalicelib.limits import quoted
from chalicelib.mailer import Email, Recipient, render
from chalicelib.models import REPAYMENTS_PENDING, Application, Borrower, Repayment, Staff
from chalicelib.observability import logger
from chalicelib.run import Part, Run

NAME = registry.declared_in(__name__)


class Audience(Enum):
    """Who a tier's notice goes to."""

    BORROWERS = "borrowers"  # one notice to each of the application's borrowers
    BDM = "bdm"  # one notice to the application's BDM, naming the borrowers


@dataclass(frozen=True)
class Tier:
    """One kind of repayment notice: when it is due, who gets it, how, and its flag.

    ``starts`` and ``ends`` give the window in days overdue (negative: before the due
    date), both inclusive, from the thresholds. ``subject`` names the loan
    (``{reference}``), the due date (``{due_date}``) and the real number of days
    overdue (``{days}``: "8 days", ``{Days}``: "8 Days").
    """

    name: str
    flag: str
    template: str
    subject: str
    audience: Audience
    starts: Callable[[Thresholds], int]
    ends: Callable[[Thresholds], int]

    def window(self, t: Thresholds) -> range:
        """The days overdue on which this tier's notice is due."""
        return range(self.starts(t), self.ends(t) + 1)

    def subject_for(self, reference: str, due_date: str, days_overdue: int) -> str:
        """The subject of one repayment's notice: its loan, due date and days overdue."""
        days = day_count(days_overdue)
        return self.subject.format(
            reference=reference, due_date=due_date, days=days, Days=days.title()
        )

    @functools.cached_property
    def kind(self) -> Kind:
        """The kind of notice this tier sends (``repayment_<tier>``)."""
        return Kind(
            f"repayment_{self.name}",
            NAME,
            self.template,
            ("repayment_id", "due_date", "tier", "recipient_id"),
            fixed=(("tier", self.name),),
        )

    @property
    def to_bdm(self) -> bool:
        """True when the notice goes to the BDM rather than the borrowers."""
        return self.audience is Audience.BDM


# Mildest first: a borrower's notice is never sent after a later one (see _drop_superseded).
# The windows do not overlap, so at most one tier is due per repayment and day.
TIERS: tuple[Tier, ...] = (
    Tier(
        "upcoming",
        "reminder_sent",
        "repayment_upcoming",
        "Upcoming Repayment Reminder: {reference} due {due_date}",
        Audience.BORROWERS,
        starts=lambda t: -t.upcoming_days,
        ends=lambda t: 0,
    ),
    Tier(
        "overdue_3_day",
        "overdue_3_day_sent",
        "repayment_overdue",
        "OVERDUE Repayment Notice: {reference}, {days} overdue",
        Audience.BORROWERS,
        starts=lambda t: t.overdue_days,
        ends=lambda t: t.urgent_days - 1,
    ),
    Tier(
        "overdue_7_day",
        "overdue_7_day_sent",
        "repayment_urgent",
        "URGENT: {Days} OVERDUE Repayment: {reference}",
        Audience.BORROWERS,
        starts=lambda t: t.urgent_days,
        ends=lambda t: t.escalation_days - 1,
    ),
    Tier(
        "overdue_10_day",
        "overdue_10_day_sent",
        "repayment_escalation",
        "ESCALATION: {Days} Overdue Repayment: {reference}",
        Audience.BDM,
        starts=lambda t: t.escalation_days,
        ends=lambda t: t.escalation_until_days,
    ),
)


def day_count(days: int) -> str:
    """``1 day``, ``8 days``: the real figure, as subjects state it."""
    return f"{days} day" if abs(days) == 1 else f"{days} days"


ESCALATION = TIERS[-1]


def tier_for(days_overdue: int, t: Thresholds) -> Tier | None:
    """The tier due at ``days_overdue`` (negative: days before the due date), if any."""
    return next((tier for tier in TIERS if days_overdue in tier.window(t)), None)


@dataclass(frozen=True)
class Due:
    """An unpaid repayment with a notice due today."""

    repayment: Repayment
    tier: Tier
    due_date: date
    days_overdue: int


@dataclass(frozen=True)
class EscalationRow:
    """One repayment in a BDM's escalation digest, formatted for display."""

    reference: str
    borrowers: str
    amount: str
    due_date: str
    days_overdue: int


@dataclass(frozen=True)
class NoticeOf:
    """What a repayment notice's ledger part is about (``Part.data``).

    ``row``: the repayment's line in its BDM's escalation digest (escalations only).
    """

    repayment_id: str
    due_date: date
    tier: Tier
    row: EscalationRow | None = None


@dataclass(frozen=True)
class FlagWrite:
    """The flag a repayment gets once every one of its notices (``keys``) is sent."""

    repayment: Repayment
    flag: str
    keys: list[str]


def notice_key(repayment_id: str, due_date: date, tier: Tier, recipient_id: str) -> str:
    """The ledger key of one repayment notice to one recipient."""
    return tier.kind.key(repayment_id, due_date.isoformat(), recipient_id)


def run(run: Run) -> None:
    """Send the due repayment notices, then flag each repayment whose notice went out."""
    notices, flags, moves = collect(run)
    outcome = deliver(run, _digests(run, _drop_superseded(run, notices)))
    if run.dry_run:
        return  # a dry run changes nothing, flags included
    # Notices an overlapping run held when we looked may have gone out since: read
    # them again, or two interleaved runs could each leave the flag for the other.
    held = [key for key, status in outcome.items() if status == ledger.CLAIMED]
    outcome.update({key: entry.status for key, entry in ledger.lookup(held).items()})
    for write in flags:
        if write.keys and all(outcome.get(key) == ledger.SENT for key in write.keys):
            set_flag(run, write.repayment, write.flag)
    if run.today == _wall_today(run):
        # Only a run for today moves what it found nothing due for: a run by hand for
        # another date leaves each where it is, for the runs of the real days.
        for repayment, next_on in moves:
            _move(run, repayment, next_on)


def _wall_today(run: Run) -> date:
    """The business date of the wall clock (a run by hand may be for another date)."""
    return run.now.astimezone(run.settings.timezone).date()


def _next_look(actions: list[Action], next_on: date | None) -> list[Action]:
    """``actions`` plus the pending index's: look again on ``next_on``, or never."""
    if next_on is None:
        return [*actions, Repayment.pending_check.remove(), Repayment.next_notice_on.remove()]
    return [*actions, Repayment.next_notice_on.set(next_on.isoformat())]


def set_flag(run: Run, repayment: Repayment, flag: str) -> None:
    """Set a ``*_sent`` flag, never creating a ghost of a repayment the CRM deleted.

    The same write moves the repayment in the pending index to the day its next
    notice becomes due (or out of it after the last), unless the CRM changed its
    due date meanwhile: then only the flag is set and the CRM's mark is kept.
    """
    action = getattr(Repayment, flag).set(True)
    tier = next(t for t in TIERS if t.flag == flag)
    try:
        due = parse_date(repayment.due_date, "due_date")
    except ValueError:
        due = None  # not read (the fan-out's consumer): the next run's Query moves it
    if due is not None:
        later = TIERS[TIERS.index(tier) + 1 :]
        base = min(run.today, _wall_today(run))
        after = next_notice_on(due, later, base, run.settings.thresholds)
        try:
            repayment.update(
                actions=_next_look([action], after),
                condition=Repayment.id.exists() & (Repayment.due_date == repayment.due_date),
            )
            return
        except UpdateError as exc:
            if exc.cause_response_code != "ConditionalCheckFailedException":
                raise
    try:
        repayment.update(actions=[action], condition=Repayment.id.exists())
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise
        logger.warning(
            "repayment deleted in the CRM during the run; flag not set",
            extra={"check": run.summary.check, "item_id": repayment.id, "flag": flag},
        )


def next_notice_on(due: date, tiers: Sequence[Tier], since: date, t: Thresholds) -> date | None:
    """The first day from ``since`` on which one of ``tiers`` is due; None: none will be."""
    days = [
        max(due + timedelta(days=tier.starts(t)), since)
        for tier in tiers
        if due + timedelta(days=tier.ends(t)) >= since
    ]
    return min(days, default=None)


def _move(run: Run, repayment: Repayment, next_on: date | None) -> None:
    """Move a repayment with nothing due today in the pending index (see ``collect``).

    Only while the CRM has not changed its due date or paid it meanwhile (its own
    mark then stands); a failed write leaves it to be looked at next run.
    """
    condition = (Repayment.due_date == repayment.due_date) & (
        Repayment.pending_check == REPAYMENTS_PENDING
    )
    if repayment.paid_date:
        condition = Repayment.paid_date == repayment.paid_date
    try:
        repayment.update(actions=_next_look([], next_on), condition=condition)
    except (PynamoDBException, ClientError) as exc:
        logger.info(
            "repayment left pending",
            extra={
                "check": run.summary.check,
                "item_id": repayment.id,
                "error": type(exc).__name__,
            },
        )


def _drop_superseded(run: Run, notices: list[Notice[NoticeOf]]) -> list[Notice[NoticeOf]]:
    """Drop notices a more severe notice of the same due date already reached.

    The flags already stop most of these; the ledger also covers a more severe
    notice that reached some borrowers before its flag was set, and a replayed
    or manual run for an earlier date. Each notice has its one part still: a BDM's
    escalations are merged into a digest after this (:func:`_digests`).
    """
    later: dict[str, list[str]] = {}
    for notice in notices:
        part = notice.parts[0]
        about = part.data
        position = TIERS.index(about.tier)
        later[part.key] = [
            notice_key(about.repayment_id, about.due_date, severer, notice.recipient.id)
            for severer in TIERS[position + 1 :]
        ]
    found = ledger.lookup(key for keys in later.values() for key in keys)
    kept = []
    for notice in notices:
        key = notice.parts[0].key
        done = [k for k in later[key] if k in found and found[k].status != ledger.PENDING]
        if done:
            logger.info(
                "notice superseded by a more severe one",
                extra={"check": run.summary.check, "key": key, "superseded_by": done[0]},
            )
            continue
        kept.append(notice)
    return kept


def _flagged_at_or_after(repayment: Repayment, tier: Tier) -> bool:
    """True when this notice or a more severe one was already delivered."""
    return any(getattr(repayment, later.flag) for later in TIERS[TIERS.index(tier) :])


Move = tuple[Repayment, date | None]


def collect(run: Run) -> tuple[list[Notice[NoticeOf]], list[FlagWrite], list[Move]]:
    """Build the due notices (one part each) and, per repayment, the flag they will set.

    One Query of the sparse pending index returns the repayments whose next look
    is due by today (``next_notice_on``): the CRM marks a new or changed one for
    the next run, and the check moves each to the day its next notice becomes due
    (``moves``: with nothing due today; ``set_flag``: after a notice) or out of the
    index after its last, so flagged and paid repayments are not read again.
    """
    t = run.settings.thresholds
    due: list[Due] = []
    moves: list[Move] = []
    if run.today < _wall_today(run):
        # A run by hand for an earlier date: what the runs since moved past it too.
        found = Repayment.by_pending.query(REPAYMENTS_PENDING)
    else:
        found = Repayment.by_pending.query(
            REPAYMENTS_PENDING, Repayment.next_notice_on <= run.today.isoformat()
        )
    for repayment in found:
        run.summary.items_read += 1
        if repayment.load_error:
            run.invalid(repayment.id, repayment.load_error)
            continue
        if repayment.paid_date:
            # A paid_date that is not a date must not pass for paid, silently.
            try:
                parse_date(repayment.paid_date, "paid_date")
            except ValueError as exc:
                run.invalid(repayment.id, str(exc))
                continue
            moves.append((repayment, None))
            continue
        try:
            due_date = parse_date(repayment.due_date, "due_date")
        except ValueError as exc:
            run.invalid(repayment.id, str(exc))
            continue
        days = (run.today - due_date).days
        tier = tier_for(days, t)
        if tier is not None and not _flagged_at_or_after(repayment, tier):
            due.append(Due(repayment, tier, due_date, days))
            continue
        flagged = [i for i, later in enumerate(TIERS) if getattr(repayment, later.flag)]
        after = TIERS[max(flagged) + 1 :] if flagged else TIERS
        moves.append((repayment, next_notice_on(due_date, after, run.today, t)))

    applications = run.fetch(Application, (d.repayment.application_id for d in due))
    readable = [a for a in applications.values() if not a.load_error]
    borrowers = run.fetch(Borrower, (b for a in readable for b in a.borrower_id_list()))
    # Only an escalation goes to the BDM: each BDM with one due is fetched once.
    escalated = {d.repayment.application_id for d in due if d.tier.to_bdm}
    bdms = run.fetch(Staff, (a.bd_id for a in readable if a.id in escalated))

    notices: list[Notice[NoticeOf]] = []
    flags: list[FlagWrite] = []
    for item in due:
        made = _notices_for(run, item, applications, borrowers, bdms)
        notices.extend(made)
        flags.append(
            FlagWrite(item.repayment, item.tier.flag, [p.key for n in made for p in n.parts])
        )
    return notices, flags, moves


def _digests(run: Run, notices: list[Notice[NoticeOf]]) -> list[Notice[NoticeOf]]:
    """The escalations merged into one digest per BDM; the borrowers' notices as they are.

    Each repayment keeps its own ledger part (key per repayment, due date and BDM),
    so a digest is claimed, sent and recorded part by part as the stale digest is.
    """
    kept: list[Notice[NoticeOf]] = []
    by_bdm: dict[str, list[Notice[NoticeOf]]] = {}
    for notice in notices:
        if notice.kind == ESCALATION.kind.name:
            by_bdm.setdefault(notice.recipient.id, []).append(notice)
        else:
            kept.append(notice)
    for group in by_bdm.values():
        bdm = group[0].recipient
        kept.append(
            Notice(
                kind=ESCALATION.kind.name,
                recipient=bdm,
                parts=[part for notice in group for part in notice.parts],
                compose=_digest_composer(bdm, run.settings.lender),
            )
        )
    return kept


def _notices_for(
    run: Run,
    item: Due,
    applications: dict[str, Application],
    borrowers: dict[str, Borrower],
    bdms: dict[str, Staff],
) -> list[Notice[NoticeOf]]:
    # One chain of checks on purpose: each either reports the repayment invalid with its
    # reason and stops, or settles what the next may assume (an amount, an application,
    # borrowers, a BDM); split up, every step would repeat the same early returns.
    repayment = item.repayment
    try:
        amount = money(parse_amount(repayment.amount, "amount"))
        parse_date(repayment.due_date, "due_date")
    except ValueError as exc:
        run.invalid(repayment.id, str(exc))
        return []
    if not repayment.application_id:
        run.invalid(repayment.id, "application_id is missing")
        return []
    app = applications.get(repayment.application_id)
    if app is None or app.load_error:
        run.invalid(repayment.id, f"application {quoted(repayment.application_id)} does not exist")
        return []
    reference = app.reference_number or app.id
    subject = item.tier.subject_for(reference, au_date(item.due_date), item.days_overdue)
    context = {
        "amount": amount,
        "due_date": au_date(item.due_date),
        "reference": reference,
        "days_overdue": item.days_overdue,
        "days_until_due": -item.days_overdue,
    }
    borrower_ids = app.borrower_id_list()
    if not borrower_ids and not item.tier.to_bdm:
        run.invalid(repayment.id, f"application {quoted(app.id)} has no borrowers")
        return []
    found = (
        run.recipient(borrowers.get(b), "borrower", b, for_item=repayment.id) for b in borrower_ids
    )
    people = [person for person in found if person is not None]
    if item.tier.to_bdm:
        if not app.bd_id:
            run.invalid(repayment.id, f"application {quoted(app.id)} has no bd_id")
            return []
        bdm = run.recipient(bdms.get(app.bd_id), "BDM", app.bd_id, for_item=repayment.id)
        if bdm is None:
            return []
        row = EscalationRow(
            reference=reference,
            borrowers=", ".join(p.name for p in people) or "No borrowers on file",
            amount=amount,
            due_date=au_date(item.due_date),
            days_overdue=item.days_overdue,
        )
        notices = [_notice(run, item, bdm, context, subject, row)]
    else:
        notices = [_notice(run, item, person, context, subject) for person in people]
    return [notice for notice in notices if notice is not None]


def _notice(
    run: Run,
    item: Due,
    to: Recipient,
    context: dict[str, object],
    subject: str,
    row: EscalationRow | None = None,
) -> Notice[NoticeOf] | None:
    key = notice_key(item.repayment.id, item.due_date, item.tier, to.id)
    about = NoticeOf(item.repayment.id, item.due_date, item.tier, row)
    part = run.part(key, item.repayment.id, about)
    if part is None:
        return None
    return Notice(
        kind=item.tier.kind.name,
        recipient=to,
        parts=[part],
        # An escalation's composer is replaced when run's _digests merges it into its digest.
        compose=_composer(item.tier, to, subject, context, run.settings.lender),
    )


def _composer(
    tier: Tier, to: Recipient, subject: str, context: dict[str, object], lender: Lender
) -> Callable[[Sequence[Part[NoticeOf]]], Email]:
    def compose(parts: Sequence[Part[NoticeOf]]) -> Email:
        return render(tier.template, to, subject, context, lender=lender)

    return compose


def digest_subject(rows: Sequence[EscalationRow]) -> str:
    """One escalation: its loan and real days overdue; several: their count and range."""
    if len(rows) == 1:
        row = rows[0]
        return ESCALATION.subject_for(row.reference, row.due_date, row.days_overdue)
    least = min(row.days_overdue for row in rows)
    most = max(row.days_overdue for row in rows)
    span = day_count(most).title() if least == most else f"{least} to {most} Days"
    return f"ESCALATION: {len(rows)} Overdue Repayments, {span}"


def escalation_email(bdm: Recipient, rows: Sequence[EscalationRow], lender: Lender) -> Email:
    """A BDM's escalation digest: most overdue first, then by loan reference."""
    ordered = sorted(rows, key=lambda r: (-r.days_overdue, r.reference))
    return render(
        ESCALATION.template,
        bdm,
        digest_subject(ordered),
        {"repayments": ordered},
        lender=lender,
    )


def _digest_composer(bdm: Recipient, lender: Lender) -> Callable[[Sequence[Part[NoticeOf]]], Email]:
    def compose(parts: Sequence[Part[NoticeOf]]) -> Email:
        return escalation_email(bdm, [p.data.row for p in parts if p.data.row is not None], lender)

    return compose


CHECK = Check(NAME, run, "repayment_reminders_start", tuple(tier.kind for tier in TIERS))
