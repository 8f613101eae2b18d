"""A realistic CRM data set, dated relative to a business day, for the demo and the CLI.

It exercises every rule: stale applications for two BDMs (one digest of several,
one single alert), fresh and settled applications that must stay quiet, notes due
today and missed two days ago (caught up) or five days ago (too old), repayments
at each reminder stage, a paid one, and one malformed repayment that is reported.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from chalicelib import ledger, registry
from chalicelib.models import (
    LOOK_AT_NEXT_RUN,
    NOTES_PENDING,
    REPAYMENTS_PENDING,
    Application,
    Borrower,
    Note,
    Notification,
    Repayment,
    Staff,
)

# id, name, first name (None: the CRM has none, as for a company), email. Names are
# accented and non-Latin as real ones are: every email path must carry them.
STAFF = [
    ("staff-olivia", "Olivia Harris", "Olivia", "olivia.harris@lender.example.com.au"),
    ("staff-jack", "Jack Thompson", "Jack", "jack.thompson@lender.example.com.au"),
    ("staff-chloe", "Chloe Nguyen", "Chloe", "chloe.nguyen@lender.example.com.au"),
    ("staff-zoe", "Zoë Papadopoulos", "Zoë", "zoe.papadopoulos@lender.example.com.au"),
]
BORROWERS = [
    ("bor-wilson", "Emma Wilson", "Emma", "emma.wilson@example.net"),
    ("bor-wilson2", "Noah Wilson", "Noah", "noah.wilson@example.net"),
    ("bor-patel", "Priya Patel", "Priya", "priya.patel@example.net"),
    ("bor-smith", "Lachlan Smith", "Lachlan", "lachlan.smith@example.net"),
    ("bor-kelly", "Grace Kelly", "Grace", "grace.kelly@example.net"),
    ("bor-nunez", "José Núñez", "José", "jose.nunez@example.net"),
    ("bor-nguyen", "Nguyễn Thị Hoa", "Hoa", "hoa.nguyen@example.net"),
]
# id, reference, stage, days in stage, amount, broker, BDM, borrowers
APPLICATIONS = [
    (
        "app-1001",
        "APP-1001",
        "valuation_ordered",
        16,
        750_000,
        "Harbour Finance Brokers",
        "staff-olivia",
        ["bor-wilson", "bor-wilson2"],
    ),
    (
        "app-1002",
        "APP-1002",
        "more_info_required",
        23,
        1_250_000,
        "Coastal Mortgage Co",
        "staff-olivia",
        ["bor-patel"],
    ),
    ("app-1003", "APP-1003", "iloo_issued", 41, 480_000, None, "staff-olivia", ["bor-smith"]),
    (
        "app-1004",
        "APP-1004",
        "formal_approval",
        15,
        2_100_000,
        "Blue Gum Lending Partners",
        "staff-jack",
        ["bor-kelly"],
    ),
    (
        "app-1005",
        "APP-1005",
        "app_submitted",
        3,
        640_000,
        "Harbour Finance Brokers",
        "staff-jack",
        ["bor-nunez"],
    ),
    (
        "app-1006",
        "APP-1006",
        "settled",
        90,
        900_000,
        "Coastal Mortgage Co",
        "staff-jack",
        ["bor-nguyen"],
    ),
    (
        "app-1007",
        "APP-1007",
        "loan_docs_issued",
        9,
        1_050_000,
        "Blue Gum Lending Partners",
        "staff-olivia",
        ["bor-nguyen"],
    ),
]
# id, title, content, days ago (negative: future), application, author
NOTES = [
    (
        "note-1",
        "Call the valuer",
        "Chase the valuation report for the Parramatta property.",
        0,
        "app-1001",
        "staff-chloe",
    ),
    (
        "note-2",
        "Follow up payslips",
        "Borrower promised two recent payslips & a bank statement.",
        0,
        "app-1002",
        "staff-olivia",
    ),
    (
        "note-3",
        "Check settlement date",
        "Confirm the settlement booking with the lender.",
        2,
        "app-1004",
        "staff-zoe",
    ),
    (
        "note-4",
        "Old reminder",
        "Missed too long ago to be useful any more.",
        5,
        "app-1005",
        "staff-chloe",
    ),
    (
        "note-5",
        "Next week's review",
        "Quarterly review of the loan book.",
        -7,
        "app-1007",
        "staff-chloe",
    ),
]
# id, application, amount, days overdue (negative: days until due), paid
REPAYMENTS = [
    ("rep-upcoming", "app-1006", 3_250.00, -5, False),
    ("rep-today", "app-1005", 1_875.40, 0, False),
    ("rep-overdue", "app-1003", 2_980.15, 4, False),
    ("rep-urgent", "app-1001", 4_410.00, 8, False),
    ("rep-escalate", "app-1002", 5_120.75, 12, False),
    # Olivia's second escalation: one digest lists both.
    ("rep-escalate-2", "app-1003", 2_980.15, 10, False),
    ("rep-paid", "app-1004", 6_000.00, 5, True),
    ("rep-too-late", "app-1007", 1_500.00, 25, False),
]


@dataclass(frozen=True)
class SeedReport:
    """How many items of each kind were written."""

    staff: int
    borrowers: int
    applications: int
    notes: int
    repayments: int


def seed(today: date, timezone: ZoneInfo) -> SeedReport:
    """Write the data set into the bound tables, dated relative to ``today``."""
    for id_, name, first_name, email in STAFF:
        Staff(id=id_, name=name, first_name=first_name, email=email).save()
    for id_, name, first_name, email in BORROWERS:
        Borrower(id=id_, name=name, first_name=first_name, email=email).save()
    _seed_applications(today, timezone)
    _seed_notes(today, timezone)
    _seed_repayments(today)
    return SeedReport(
        staff=len(STAFF),
        borrowers=len(BORROWERS),
        applications=len(APPLICATIONS),
        notes=len(NOTES),
        repayments=len(REPAYMENTS) + 1,
    )


def _seed_applications(today: date, timezone: ZoneInfo) -> None:
    """:data:`APPLICATIONS`, each last moved to its stage the given number of days ago."""
    for id_, ref, stage, days, amount, broker, bd, borrowers in APPLICATIONS:
        changed = datetime.combine(today - timedelta(days=days), time(10, 30), timezone)
        values: dict[str, Any] = {
            "id": id_,
            "reference_number": ref,
            "stage": stage,
            "stage_last_updated": changed.isoformat(),
            "loan_amount": amount,
            "bd_id": bd,
            "borrower_ids": borrowers,
        }
        if broker:
            values["broker_name"] = broker
        Application(**values).save()


def _seed_notes(today: date, timezone: ZoneInfo) -> None:
    """:data:`NOTES`, written a month ago, each due the given number of days ago."""
    for id_, title, content, days_ago, app, author in NOTES:
        Note(
            id=id_,
            title=title,
            content=content,
            remind_date=(today - timedelta(days=days_ago)).isoformat(),
            application_id=app,
            created_by=author,
            created_at=datetime.combine(today - timedelta(days=30), time(9), timezone).isoformat(),
            pending_check=NOTES_PENDING,  # what the CRM writes with a remind date
        ).save()


def _seed_repayments(today: date) -> None:
    """:data:`REPAYMENTS`, then one with no amount yet."""
    for id_, app, due_amount, overdue, paid in REPAYMENTS:
        due = today - timedelta(days=overdue)
        repayment = Repayment(
            id=id_, application_id=app, amount=due_amount, due_date=due.isoformat()
        )
        if paid:
            repayment.paid_date = due.isoformat()
        else:  # what the CRM writes on an unpaid repayment: look at it at the next run
            repayment.pending_check = REPAYMENTS_PENDING
            repayment.next_notice_on = LOOK_AT_NEXT_RUN
        repayment.save()
    # The CRM sometimes saves a repayment before its amount is known: reported, not sent.
    Repayment(
        id="rep-no-amount",
        application_id="app-1004",
        due_date=(today + timedelta(days=2)).isoformat(),
        pending_check=REPAYMENTS_PENDING,
        next_notice_on=LOOK_AT_NEXT_RUN,
    ).save()


# --- ledger history: what a month of runs would have left, for `ops.cli report` -------------

# The days before today that, with today, fill the report's default 30 days.
HISTORY_DAYS = 29
# Notices of each kind on the day ``n`` days before today (a varied, repeatable month).
HISTORY_VOLUME: dict[str, Callable[[int], int]] = {
    "stale_applications": lambda n: 1 + (n % 3 == 0),
    "note_reminders": lambda n: 2 + n % 4,
    "repayment_upcoming": lambda n: 1 + n % 3,
    "repayment_overdue_3_day": lambda n: n % 2 + (n % 5 == 0),
    "repayment_overdue_7_day": lambda n: int(n % 4 == 1),
    "repayment_overdue_10_day": lambda n: int(n % 7 == 3),
}
# The past items' ids, ``<prefix>-0nnn``: never one of the seeded CRM's (``*-1nnn``, named).
HISTORY_ITEMS = {
    "stale_applications": "app",
    "note_reminders": "note",
    "repayment_reminders": "rep",
}
# Two addresses that keep failing: a mailbox that no longer exists, a mistyped domain.
GONE = "old.mailbox@example.net"
TYPO = "j.doe@exmaple.net"
HISTORY_FAILURES = (
    (
        TYPO,
        "MessageRejected: Email address is not verified. The following identities failed "
        f"the check in region AP-SOUTHEAST-2: {TYPO}",
    ),
    (GONE, None),  # a hard bounce, reported by SES after it accepted the message
    (TYPO, "MessageRejected: Email address is not verified."),
    ("emma.wilson@example.net", ledger.INTERRUPTED),
)


def seed_history(today: date, timezone: ZoneInfo, days: int = HISTORY_DAYS) -> int:
    """Write the ledger a month of runs before ``today`` would have left; return how many.

    Mostly sent and delivered, with permanent failures, bounces, complaints, and (on the
    last two days) notices still deferred, to the seeded CRM's people and two addresses
    that fail repeatedly. The items are past ones (``*-0nnn``), not the seeded CRM's, so
    they never stand in for a notice a run still owes, and no suppression is recorded.
    """
    addresses = [email for _, _, _, email in STAFF + BORROWERS]
    written = 0
    with Notification.batch_write() as batch:
        for offset in range(days, 0, -1):
            day = today - timedelta(days=offset)
            ran_at = datetime.combine(day, time(12), timezone).astimezone(UTC)
            for kind, volume in HISTORY_VOLUME.items():
                for _ in range(volume(offset)):
                    written += 1
                    batch.save(_past_notice(kind, written, day, ran_at, offset, addresses))
    return written


def _past_notice(
    kind: str, n: int, day: date, at: datetime, offset: int, addresses: list[str]
) -> Notification:
    """The ``n``-th notice of the history, sent on ``day`` at ``at`` unless ``n`` says otherwise."""
    item = f"{HISTORY_ITEMS[registry.kind(kind).check]}-0{n:03d}"
    recipient = addresses[n % len(addresses)]
    entry = Notification(
        id=registry.kind(kind).key(*_key_parts(kind, item, day, recipient)),
        kind=kind,
        item_id=item,
        recipient_id=recipient.partition("@")[0],
        recipient_email=recipient,
        business_date=day.isoformat(),
        subject=f"({kind.replace('_', ' ')} for {item})",
        status=ledger.SENT,
        run_id=f"history-{day.isoformat()}",
        attempts=1,
        created_at=at,
        updated_at=at,
        claimed_at=at,
        lease_expires_at=at + ledger.CLAIM_LEASE,
        sent_at=at,
        message_id=f"history-{n:04d}",
        ses_events={"Send", "Delivery"},
        delivered_at=at + timedelta(seconds=4),
    )
    if n % 9 == 0:
        entry.recipient_email, reason = HISTORY_FAILURES[(n // 9) % len(HISTORY_FAILURES)]
        if reason is None:
            entry.ses_events = {"Send", "Bounce"}
            entry.delivered_at = None
            entry.bounced_at, entry.bounce_type = at + timedelta(seconds=6), "Permanent"
        else:
            entry.status, entry.failure_reason, entry.last_error = ledger.FAILED, reason, reason
            entry.failed_status, entry.failed_at = ledger.FAILED, at
            entry.sent_at = entry.message_id = entry.ses_events = entry.delivered_at = None
    elif n % 23 == 0:
        entry.ses_events = {"Send", "Delivery", "Complaint"}
        entry.complained_at = at + timedelta(hours=3)
    elif offset <= 2 and n % 4 == 0:
        entry.status, entry.last_error = (
            ledger.PENDING,
            "Throttling: Maximum sending rate exceeded.",
        )
        entry.sent_at = entry.message_id = entry.ses_events = entry.delivered_at = None
    return entry


def _key_parts(kind: str, item: str, day: date, recipient: str) -> tuple[object, ...]:
    """The free key parts of a past notice of ``kind`` (see ``Kind.key_parts``)."""
    if kind == "stale_applications":
        return item, "valuation_ordered", day.isoformat(), 0
    return item, day.isoformat(), recipient.partition("@")[0]
