"""One-line builders for CRM items, saved through the PynamoDB models.

Defaults describe one healthy application: BDM ``bdm-1`` (Brooke Davis), borrower
``bor-1`` (Ben Lee) and application ``app-1`` (APP-1001, Valuation Ordered).
Pass keyword arguments to change any attribute; ``None`` leaves it absent.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

from pynamodb.models import Model

from chalicelib import ledger
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
from tests.support import aws_session

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

# The usual cast's addresses (see crm()), for assertions on who was mailed.
BROOKE = "brooke.davis@lender.example.com.au"  # BDM bdm-1
BLAKE = "blake.hart@lender.example.com.au"  # BDM bdm-2, where a test has two BDMs
SAM = "sam.author@lender.example.com.au"  # note author staff-2
BEN = "ben.lee@example.net"  # borrower bor-1
MIA = "mia.chen@example.net"  # borrower bor-2
# The next_notice_on the CRM writes on a new or changed unpaid repayment.
CHANGED_ON = LOOK_AT_NEXT_RUN


_M = TypeVar("_M", bound=Model)


def _save(model: type[_M], values: Mapping[str, object]) -> _M:
    attributes = {k: v for k, v in values.items() if v is not None}
    # Model's own parameters are named so that no attribute value is matched against them.
    item = model(hash_key=None, range_key=None, _user_instantiated=True, **attributes)
    item.save()
    return item


def staff(
    id: str = "bdm-1",
    name: str | None = "Brooke Davis",
    email: str | None = BROOKE,
    first_name: str | None = None,
) -> Staff:
    """A CRM user (BDM or note author)."""
    return _save(Staff, {"id": id, "name": name, "email": email, "first_name": first_name})


def borrower(
    id: str = "bor-1",
    name: str | None = "Ben Lee",
    email: str | None = BEN,
    first_name: str | None = None,
) -> Borrower:
    """A borrower."""
    return _save(Borrower, {"id": id, "name": name, "email": email, "first_name": first_name})


def application(id: str = "app-1", **overrides: object) -> Application:
    """A loan application; ``stage_last_updated`` defaults to long ago."""
    values: dict[str, object] = {
        "id": id,
        "reference_number": "APP-1001",
        "stage": "valuation_ordered",
        "stage_last_updated": "2026-01-05T10:00:00+11:00",
        "loan_amount": 750000,
        "broker_name": "Harbour Finance Brokers",
        "bd_id": "bdm-1",
        "borrower_ids": ["bor-1"],
    }
    values.update(overrides)
    return _save(Application, values)


def note(id: str = "note-1", **overrides: object) -> Note:
    """A note on ``app-1`` by ``staff-2`` with a reminder date."""
    values: dict[str, object] = {
        "id": id,
        "title": "Call the valuer",
        "content": "Chase the valuation report for the Parramatta property.",
        "remind_date": "2026-11-23",
        "application_id": "app-1",
        "created_by": "staff-2",
        "created_at": "2026-11-01T09:00:00+11:00",
    }
    values.update(overrides)
    if values.get("remind_date") is not None:
        # What the CRM writes with a remind date (README, Contract with the CRM).
        values.setdefault("pending_check", NOTES_PENDING)
    return _save(Note, values)


def repayment(id: str = "rep-1", **overrides: object) -> Repayment:
    """An unpaid repayment on ``app-1``."""
    values: dict[str, object] = {
        "id": id,
        "application_id": "app-1",
        "amount": 2450.5,
        "due_date": "2026-11-30",
    }
    values.update(overrides)
    if values.get("due_date") is not None and values.get("paid_date") is None:
        # What the CRM writes on an unpaid repayment: look at it from the day of the change.
        values.setdefault("pending_check", REPAYMENTS_PENDING)
        values.setdefault("next_notice_on", CHANGED_ON)
    return _save(Repayment, values)


def raw_item(table: str, item: Mapping[str, AttributeValueTypeDef]) -> None:
    """Put an item as given (DynamoDB JSON), for items the models would refuse.

    A note or unpaid repayment gets the pending marks the CRM writes with it, unless
    given (see ``note`` and ``repayment``).
    """
    marks: dict[str, AttributeValueTypeDef] = {}
    if table.endswith("notes") and "remind_date" in item:
        marks = {"pending_check": {"S": NOTES_PENDING}}
    elif table.endswith("repayments") and "paid_date" not in item:
        marks = {"pending_check": {"S": REPAYMENTS_PENDING}, "next_notice_on": {"S": CHANGED_ON}}
    aws_session().client("dynamodb").put_item(TableName=table, Item={**marks, **item})


def crm(bdm: bool = True, author: bool = True, borrowers: int = 1) -> None:
    """The usual cast: BDM ``bdm-1``, note author ``staff-2`` and ``borrowers`` borrowers."""
    if bdm:
        staff()
    if author:
        staff("staff-2", "Sam Author", SAM)
    names = ["Ben Lee", "Mia Chen", "Ava Nguyen"]
    for n in range(borrowers):
        borrower(f"bor-{n + 1}", names[n], f"{names[n].lower().replace(' ', '.')}@example.net")


# --- common worlds --------------------------------------------------------------------------


def repayment_due_to_two_borrowers(id: str = "rep-1", **overrides: object) -> None:
    """rep-1 ($2,450.50, due 30/11/2026) on app-1 with borrowers Ben and Mia."""
    crm(borrowers=2)
    application(borrower_ids=["bor-1", "bor-2"])
    repayment(id, **overrides)


def second_bdm() -> None:
    """BDM ``bdm-2``, Blake Hart, for worlds with two BDMs."""
    staff("bdm-2", "Blake Hart", BLAKE)


def stale_digest_of_two() -> None:
    """Brooke's (``bdm-1``) stale digest: app-1 and app-2, long in their stages."""
    crm()
    application("app-1", reference_number="APP-1001")
    application("app-2", reference_number="APP-1002", stage="formal_approval")


def two_escalations_of_brooke() -> None:
    """rep-1 (APP-1001) and rep-2 (APP-1002), Brooke's loans, 10 and 12 days overdue."""
    crm()
    application()
    application("app-2", reference_number="APP-1002")
    repayment(due_date="2026-11-13")
    repayment("rep-2", application_id="app-2", due_date="2026-11-11")


def note_for_author_and_bdm() -> None:
    """note-1 due 23/11/2026, to its author Sam and app-1's BDM Brooke."""
    crm()
    application()
    note()


def one_of_each() -> None:
    """Something due for every check on 23 Nov 2026: a stale application, a note, a repayment."""
    crm()
    application(stage_last_updated="2026-11-02T10:00:00+11:00")
    note(remind_date="2026-11-23")
    repayment(due_date="2026-11-30")


def ledger_entry(
    key: str,
    kind: str = "note_reminders",
    business_date: str = "2026-11-21",
    status: str = ledger.SENT,
    email: str = "ben.lee@example.net",
    *,
    at: datetime = datetime(2026, 11, 20, 1, tzinfo=UTC),
    **fields: object,
) -> None:
    """A ledger notice as a run leaves it, written at ``at`` (``fields``: its item,
    recipient or run, a failure reason, SES's record, ...)."""
    values: dict[str, object] = {
        "id": key,
        "kind": kind,
        "item_id": f"item-{key}",
        "recipient_id": f"r-{key}",
        "recipient_email": email,
        "business_date": business_date,
        "status": status,
        "run_id": "run-1",
        "attempts": 1,
        "created_at": at,
        "updated_at": at,
        "claimed_at": at,
        "lease_expires_at": at,
    }
    values.update(fields)
    _save(Notification, values)


def claimed_entry(
    key: str,
    *,
    recipient_id: str,
    email: str,
    run_id: str,
    lease_expires_at: datetime,
    kind: str = "repayment_upcoming",
    item_id: str = "rep-1",
) -> None:
    """A ledger entry another run left ``claimed`` (rep-1's upcoming reminder by default),
    claimed one lease before ``lease_expires_at``."""
    claimed_at = lease_expires_at - ledger.CLAIM_LEASE
    Notification(
        id=key,
        kind=kind,
        item_id=item_id,
        recipient_id=recipient_id,
        recipient_email=email,
        business_date="2026-11-23",
        status=ledger.CLAIMED,
        run_id=run_id,
        attempts=1,
        created_at=claimed_at,
        updated_at=claimed_at,
        claimed_at=claimed_at,
        lease_expires_at=lease_expires_at,
    ).save()
