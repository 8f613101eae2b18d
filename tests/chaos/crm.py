"""A deterministic CRM for the soak: notices due on every simulated day, each one identifiable.

Every notice names its CRM item in the message itself, so the oracle can map an
accepted message back to (recipient, kind, item) without asking the code under test:
note titles carry the note id (``[N-007]``), each repayment has its own loan reference
(``LN-R012``) and due date, and stale applications are listed by reference in the digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from chalicelib.models import (
    NOTES_PENDING,
    REPAYMENTS_PENDING,
    Application,
    Borrower,
    Note,
    Repayment,
    Staff,
)

FIRST_NAMES = ["Olivia", "Jack", "Chloe", "Liam", "Mia", "Noah", "Ava", "Leo", "Isla", "Ethan"]
LAST_NAMES = ["Harris", "Thompson", "Nguyen", "O'Brien", "Patel", "Rossi", "Kelly", "Tanaka"]
ACTIVE = ["valuation_ordered", "more_info_required", "iloo_issued", "formal_approval"]
STAFF_COUNT = 5
BORROWER_COUNT = 40


@dataclass(frozen=True)
class CrmSize:
    """How many items of each kind were written."""

    staff: int
    borrowers: int
    applications: int
    notes: int
    repayments: int


def staff_email(n: int) -> str:
    """The address of staff member ``n``."""
    return f"staff{n}@lender.example.com.au"


def borrower_email(n: int) -> str:
    """The address of borrower ``n``."""
    return f"borrower{n:02d}@example.net"


def _name(n: int) -> str:
    return f"{FIRST_NAMES[n % len(FIRST_NAMES)]} {LAST_NAMES[(n * 3) % len(LAST_NAMES)]}"


# Long because it is the soak's whole CRM, written top to bottom as the docstring lists it, so
# the oracle's expectations can be read against one function.
def seed(start: date, days: int, timezone: ZoneInfo) -> CrmSize:
    """Write the CRM into the bound tables for a soak of ``days`` days from ``start``.

    - stale applications: one becomes stale on each day (and again 7 days later), a few
      were stale before the start (one digest of several on day 0), two are settled;
    - notes: two reminders a day, plus ones missed 2 days (caught up) and 4 days
      (too old: legitimately skipped) before the start;
    - repayments: one due every day from 10 days before the start to 8 days after the
      end, each on its own settled loan with one or two borrowers; every fifth is paid.
    """
    with Staff.batch_write() as batch:
        for n in range(STAFF_COUNT):
            batch.save(Staff(id=f"staff-{n}", name=_name(n + 3), email=staff_email(n)))
    with Borrower.batch_write() as batch:
        for n in range(BORROWER_COUNT):
            batch.save(Borrower(id=f"bor-{n:02d}", name=_name(n), email=borrower_email(n)))

    applications: list[Application] = []
    # Stale: stage changed 14 - j days before the start, so it turns stale on day j.
    for j in range(-3, days):
        changed = datetime.combine(start - timedelta(days=14 - j), time(10, 30), timezone)
        n = len(applications)
        applications.append(
            Application(
                id=f"app-s{j + 3:02d}",
                reference_number=f"APP-S{j + 3:02d}",
                stage=ACTIVE[n % len(ACTIVE)],
                stage_last_updated=changed.isoformat(),
                loan_amount=400_000 + 25_000 * n,
                broker_name="Harbour Finance Brokers" if n % 2 else None,
                bd_id=f"staff-{n % STAFF_COUNT}",
                borrower_ids=[f"bor-{n % BORROWER_COUNT:02d}"],
            )
        )
    for n in range(2):
        changed = datetime.combine(start - timedelta(days=60 + n), time(9), timezone)
        applications.append(
            Application(
                id=f"app-closed{n}",
                reference_number=f"APP-C{n}",
                stage="settled" if n == 0 else "withdrawn",
                stage_last_updated=changed.isoformat(),
                loan_amount=900_000,
                bd_id="staff-0",
                borrower_ids=["bor-00"],
            )
        )
    repayments: list[Repayment] = []
    for k, offset in enumerate(range(-10, days + 8)):
        borrowers = [f"bor-{(2 * k) % BORROWER_COUNT:02d}"]
        if k % 3 == 0:
            borrowers.append(f"bor-{(2 * k + 1) % BORROWER_COUNT:02d}")
        settled = datetime.combine(start - timedelta(days=200), time(9), timezone)
        applications.append(
            Application(
                id=f"app-r{k:02d}",
                reference_number=f"LN-R{k:02d}",
                stage="settled",
                stage_last_updated=settled.isoformat(),
                loan_amount=500_000 + 10_000 * k,
                bd_id=f"staff-{k % STAFF_COUNT}",
                borrower_ids=borrowers,
            )
        )
        due = start + timedelta(days=offset)
        repayment = Repayment(
            id=f"rep-{k:02d}",
            application_id=f"app-r{k:02d}",
            amount=1_000 + 37.5 * k,
            due_date=due.isoformat(),
        )
        if k % 5 == 4:
            repayment.paid_date = due.isoformat()
        else:  # the CRM's marks on an unpaid repayment (README, Contract with the CRM)
            repayment.pending_check = REPAYMENTS_PENDING
            repayment.next_notice_on = start.isoformat()
        repayments.append(repayment)
    with Application.batch_write() as batch:
        for app in applications:
            batch.save(app)
    with Repayment.batch_write() as batch:
        for repayment in repayments:
            batch.save(repayment)

    stale_ids = [a.id for a in applications if a.id.startswith("app-s")]
    notes: list[Note] = []
    for offset in [-4, -2, *range(days + 1)]:
        for m in range(2):
            n = len(notes)
            notes.append(
                Note(
                    id=f"note-{n:03d}",
                    title=f"[N-{n:03d}] Follow up with the borrower",
                    content="Chase the outstanding documents & confirm the next step.",
                    remind_date=(start + timedelta(days=offset)).isoformat(),
                    application_id=stale_ids[n % len(stale_ids)] if m == 0 else None,
                    created_by=f"staff-{(n + 1) % STAFF_COUNT}",
                    created_at=datetime.combine(
                        start - timedelta(days=20), time(9), timezone
                    ).isoformat(),
                    pending_check=NOTES_PENDING,
                )
            )
    with Note.batch_write() as batch:
        for note in notes:
            batch.save(note)
    return CrmSize(
        staff=STAFF_COUNT,
        borrowers=BORROWER_COUNT,
        applications=len(applications),
        notes=len(notes),
        repayments=len(repayments),
    )
