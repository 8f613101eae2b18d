"""PynamoDB models for the CRM's tables and this service's delivery ledger.

Table names come from the stage's environment, so they are bound at run time
(:func:`bind`) rather than at import; the indexes the checks query are declared
here, so creating a table from its model creates its indexes too.
"""

from __future__ import annotations

import functools
from typing import Any, TypeVar

from pynamodb.attributes import (
    BooleanAttribute,
    ListAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
    UTCDateTimeAttribute,
)
from pynamodb.connection import Connection
from pynamodb.constants import PAY_PER_REQUEST_BILLING_MODE
from pynamodb.exceptions import AttributeDeserializationError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, KeysOnlyProjection
from pynamodb.models import Model

from chalicelib import clients
from chalicelib.config import Settings

_M = TypeVar("_M", bound="CrmModel")

# The status of a ledger entry that could not be read (Notification.from_raw_data).
UNREADABLE = "unreadable"


class CrmModel(Model):
    """Base for CRM items: an item this service cannot read is returned, not raised.

    The CRM owns these tables and this service only reads them, so one item with
    an attribute of the wrong DynamoDB type must not abort a whole query page.
    Such an item comes back with ``load_error`` set and is reported as invalid.
    """

    id = UnicodeAttribute(hash_key=True)
    load_error: str | None = None

    @classmethod
    def from_raw_data(cls: type[_M], data: dict[str, Any]) -> _M:
        """Deserialize an item, keeping its id and the reason when it is malformed."""
        try:
            return super().from_raw_data(data)
        except (AttributeDeserializationError, ValueError, TypeError) as exc:
            broken = cls(id=str(data.get("id", {}).get("S", "<no id>")))
            broken.load_error = f"unreadable item: {exc}"
            return broken


class Staff(CrmModel):
    """A CRM user: note authors and business development managers (BDMs)."""

    class Meta:
        table_name = "staff"
        billing_mode = PAY_PER_REQUEST_BILLING_MODE

    id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(null=True)
    # The CRM's first name, when it has one (the greeting uses it); ``name`` is the full name.
    first_name = UnicodeAttribute(null=True)
    email = UnicodeAttribute(null=True)


class Borrower(CrmModel):
    """A borrower on one or more loan applications."""

    class Meta:
        table_name = "borrowers"
        billing_mode = PAY_PER_REQUEST_BILLING_MODE

    id = UnicodeAttribute(hash_key=True)
    name = UnicodeAttribute(null=True)
    # The CRM's first name, when it has one (the greeting uses it); ``name`` is the full name.
    first_name = UnicodeAttribute(null=True)
    email = UnicodeAttribute(null=True)


class StageIndex(GlobalSecondaryIndex["Application"]):
    """Applications of one stage, oldest stage change first (stale check)."""

    class Meta:
        index_name = "stage-stage_last_updated-index"
        projection = AllProjection()

    stage = UnicodeAttribute(hash_key=True)
    stage_last_updated = UnicodeAttribute(range_key=True)


class Application(CrmModel):
    """A loan application moving through the lending stages."""

    class Meta:
        table_name = "applications"
        billing_mode = PAY_PER_REQUEST_BILLING_MODE

    id = UnicodeAttribute(hash_key=True)
    reference_number = UnicodeAttribute(null=True)
    stage = UnicodeAttribute(null=True)
    stage_last_updated = UnicodeAttribute(null=True)
    loan_amount = NumberAttribute(null=True)
    broker_name = UnicodeAttribute(null=True)
    bd_id = UnicodeAttribute(null=True)
    borrower_ids = ListAttribute(of=UnicodeAttribute, null=True)

    by_stage = StageIndex()

    def borrower_id_list(self) -> list[str]:
        """The borrower ids as plain strings (empty when absent)."""
        return [str(b) for b in self.borrower_ids or []]


# The value of ``pending_check`` on a note whose reminders may still be owed, and on a
# repayment whose notices may: one partition per check, so one Query covers a window.
NOTES_PENDING = "note_reminders"
REPAYMENTS_PENDING = "repayment_reminders"
# The ``next_notice_on`` the CRM writes on a new or changed unpaid repayment: before any
# business date, so the next run (or a manual run for any date) looks at it.
LOOK_AT_NEXT_RUN = "0001-01-01"


class PendingNoteIndex(GlobalSecondaryIndex["Note"]):
    """Sparse: only notes that may still owe a reminder, by remind date.

    The CRM writes ``pending_check`` whenever it writes a ``remind_date``; the note
    check removes it once every reminder of the note is sent.
    """

    class Meta:
        index_name = "pending_check-remind_date-index"
        projection = AllProjection()

    pending_check = UnicodeAttribute(hash_key=True)
    remind_date = UnicodeAttribute(range_key=True)


class Note(CrmModel):
    """A note on an application, optionally with a reminder date."""

    class Meta:
        table_name = "notes"
        billing_mode = PAY_PER_REQUEST_BILLING_MODE

    id = UnicodeAttribute(hash_key=True)
    title = UnicodeAttribute(null=True)
    content = UnicodeAttribute(null=True)
    remind_date = UnicodeAttribute(null=True)
    application_id = UnicodeAttribute(null=True)
    created_by = UnicodeAttribute(null=True)
    created_at = UnicodeAttribute(null=True)
    pending_check = UnicodeAttribute(null=True)

    by_pending = PendingNoteIndex()


class PendingRepaymentIndex(GlobalSecondaryIndex["Repayment"]):
    """Sparse: only unpaid repayments that may still get a notice, by when to look next.

    The CRM writes ``pending_check`` and ``next_notice_on`` (``LOOK_AT_NEXT_RUN``)
    whenever it writes ``due_date`` or ``paid_date`` of an unpaid repayment,
    and removes both when it is paid; the repayment check moves ``next_notice_on`` to
    the day the next notice becomes due and removes both after the last one.
    """

    class Meta:
        index_name = "pending_check-next_notice_on-index"
        projection = AllProjection()

    pending_check = UnicodeAttribute(hash_key=True)
    next_notice_on = UnicodeAttribute(range_key=True)


class Repayment(CrmModel):
    """A scheduled repayment; the ``*_sent`` flags are set by this service."""

    class Meta:
        table_name = "repayments"
        billing_mode = PAY_PER_REQUEST_BILLING_MODE

    id = UnicodeAttribute(hash_key=True)
    application_id = UnicodeAttribute(null=True)
    amount = NumberAttribute(null=True)
    due_date = UnicodeAttribute(null=True)
    paid_date = UnicodeAttribute(null=True)
    reminder_sent = BooleanAttribute(null=True)
    overdue_3_day_sent = BooleanAttribute(null=True)
    overdue_7_day_sent = BooleanAttribute(null=True)
    overdue_10_day_sent = BooleanAttribute(null=True)
    pending_check = UnicodeAttribute(null=True)
    next_notice_on = UnicodeAttribute(null=True)

    by_pending = PendingRepaymentIndex()


class ItemIndex(GlobalSecondaryIndex["Notification"]):
    """Ledger entries about one CRM item, newest last."""

    class Meta:
        index_name = "item_id-index"
        projection = AllProjection()

    item_id = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class RecipientIndex(GlobalSecondaryIndex["Notification"]):
    """Ledger entries addressed to one email address, newest last."""

    class Meta:
        index_name = "recipient_email-index"
        projection = AllProjection()

    recipient_email = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class FailedIndex(GlobalSecondaryIndex["Notification"]):
    """Sparse: only entries that failed permanently carry ``failed_status``, oldest first.

    ``retry-failed`` finds them here without a Scan; re-queueing or a late
    ``sent`` removes the attribute, so the entry leaves the index.
    """

    class Meta:
        index_name = "failed_status-failed_at-index"
        projection = AllProjection()

    failed_status = UnicodeAttribute(hash_key=True)
    failed_at = UTCDateTimeAttribute(range_key=True)


class SendTokenIndex(GlobalSecondaryIndex["Notification"]):
    """Sparse: the entries one SES message covers, by the token it was tagged with.

    Every send tags its message with a fresh token that the claimed entries carry,
    so an SES event (Send, Delivery, Bounce, ...) finds its entries without a Scan.
    """

    class Meta:
        index_name = "send_token-index"
        projection = KeysOnlyProjection()

    send_token = UnicodeAttribute(hash_key=True)


class DueIndex(GlobalSecondaryIndex["Notification"]):
    """Sparse: the service's own schedule, the items a check must look at again, by date.

    Only schedule entries (``due#<check>#<item id>``, :mod:`chalicelib.schedule`) carry
    ``due_check``; a check reads the ones due by today with one Query instead of
    re-reading every item it has already handled.
    """

    class Meta:
        index_name = "due_check-due_on-index"
        projection = KeysOnlyProjection()

    due_check = UnicodeAttribute(hash_key=True)
    due_on = UnicodeAttribute(range_key=True)


class BusinessDateIndex(GlobalSecondaryIndex["Notification"]):
    """Sparse: the notices of one business date, oldest first (``ops.cli report``).

    Only a claim writes ``business_date`` (:func:`chalicelib.ledger.claim`), so only
    notices are in it: the schedule's, sweeps', settled notes' (``done#``) and
    suppression entries carry no business date and stay out without a filter. A
    report reads a date range with one Query per day, never a Scan; the sort key lets
    DynamoDB split a busy day's partition for heat.
    """

    class Meta:
        index_name = "business_date-created_at-index"
        projection = AllProjection()

    business_date = UnicodeAttribute(hash_key=True)
    created_at = UTCDateTimeAttribute(range_key=True)


class Notification(Model):
    """One notice to one recipient about one CRM item: the delivery ledger.

    ``id`` is the notice's deterministic key; ``status`` moves
    ``claimed`` -> ``sent`` | ``pending`` (transient failure, retried) | ``failed``
    | ``unknown`` (SES may have accepted it: settled by SES's own events).
    """

    class Meta:
        table_name = "notifications"
        billing_mode = PAY_PER_REQUEST_BILLING_MODE

    id = UnicodeAttribute(hash_key=True)
    kind = UnicodeAttribute()
    item_id = UnicodeAttribute()
    recipient_id = UnicodeAttribute()
    recipient_email = UnicodeAttribute()
    business_date = UnicodeAttribute()
    subject = UnicodeAttribute(null=True)
    status = UnicodeAttribute()
    run_id = UnicodeAttribute()
    attempts = NumberAttribute(default=0)
    created_at = UTCDateTimeAttribute()
    updated_at = UTCDateTimeAttribute()
    claimed_at = UTCDateTimeAttribute()
    lease_expires_at = UTCDateTimeAttribute()
    sent_at = UTCDateTimeAttribute(null=True)
    message_id = UnicodeAttribute(null=True)
    failure_reason = UnicodeAttribute(null=True)
    last_error = UnicodeAttribute(null=True)
    # Set ("failed") only while status is failed: the key of the sparse FailedIndex.
    failed_status = UnicodeAttribute(null=True)
    failed_at = UTCDateTimeAttribute(null=True)
    # The token the message of the latest attempt was tagged with (SES events carry it).
    send_token = UnicodeAttribute(null=True)
    # SES's own record of that message (chalicelib.ses_events): the event types seen
    # (Send, Delivery, Bounce, ...) and, for each, when it first happened and why.
    ses_events = UnicodeSetAttribute(null=True)
    delivered_at = UTCDateTimeAttribute(null=True)
    delayed_at = UTCDateTimeAttribute(null=True)
    bounced_at = UTCDateTimeAttribute(null=True)
    bounce_type = UnicodeAttribute(null=True)
    complained_at = UTCDateTimeAttribute(null=True)
    rejected_at = UTCDateTimeAttribute(null=True)
    rejected_reason = UnicodeAttribute(null=True)
    # Only on suppression entries (id ``suppressed#<address>``, chalicelib.suppression):
    # why the address is no longer mailed, since when, and the entry whose message caused it.
    suppression_reason = UnicodeAttribute(null=True)
    suppressed_at = UTCDateTimeAttribute(null=True)
    suppressed_by = UnicodeAttribute(null=True)
    # Only on schedule entries (chalicelib.schedule): the check that looks at the item
    # again and the business date it does so (the sparse DueIndex's keys); on a check's
    # sweep entry, the stage_last_updated below which every item has been looked at.
    due_check = UnicodeAttribute(null=True)
    due_on = UnicodeAttribute(null=True)
    swept_on = UnicodeAttribute(null=True)
    swept_below = UnicodeAttribute(null=True)
    # Only on a note check's record of one remind date's settled notes (``done#...``):
    # one element per note whose every reminder was sent (see checks.note_reminders).
    done_notes = UnicodeSetAttribute(null=True)

    by_item = ItemIndex()
    by_recipient = RecipientIndex()
    by_failure = FailedIndex()
    by_send_token = SendTokenIndex()
    by_due = DueIndex()
    by_business_date = BusinessDateIndex()

    # Set on an entry that could not be read (see from_raw_data); its status is UNREADABLE.
    load_error: str | None = None

    @classmethod
    def from_raw_data(cls, data: dict[str, Any]) -> Notification:
        """Deserialize an entry; one that is malformed comes back with status ``unreadable``.

        A corrupt entry (an attribute of the wrong type, a required one missing) must
        not crash the run that reads it, and must not be taken as absent either: it
        may be the record of a notice that went out. So it is returned as an entry
        no state of the ledger matches, which a run skips and never sends over.
        """
        try:
            entry = super().from_raw_data(data)
        except (AttributeDeserializationError, ValueError, TypeError) as exc:
            reason = f"unreadable entry: {exc}"
        else:
            # What a run needs to classify an entry: its status, and a claim's lease.
            needed = ["status"] + (["lease_expires_at"] if entry.status == "claimed" else [])
            missing = [name for name in needed if getattr(entry, name) is None]
            if not missing:
                return entry
            reason = f"unreadable entry: {', '.join(missing)} missing"
        broken = cls(id=str(data.get("id", {}).get("S", "<no id>")), status=UNREADABLE)
        broken.load_error = reason
        return broken


# Every model and the settings field (``Settings.tables``) that names its table: the one
# table map (bind() here; the IAM policy and the CloudFormation tables in ops.infra).
TABLE_FIELDS: dict[type[Model], str] = {
    Application: "applications",
    Note: "notes",
    Repayment: "repayments",
    Staff: "staff",
    Borrower: "borrowers",
    Notification: "notifications",
}
ALL_MODELS: tuple[type[Model], ...] = tuple(TABLE_FIELDS)


def bind(settings: Settings) -> None:
    """Point every model at the stage's table names and region, through one shared client.

    PynamoDB gives each model a connection with its own botocore session and client,
    each made on its first request; here every model's connection sends through the
    one client of :func:`_dynamodb` (one HTTP pool, a connection for every send a run
    has in flight), made now.
    """
    pool = settings.send.send_concurrency
    client = _dynamodb(settings.region, settings.dynamodb_endpoint, pool).client
    for model, attr in TABLE_FIELDS.items():
        table_name = getattr(settings.tables, attr)
        wanted = (table_name, settings.region, settings.dynamodb_endpoint)
        if (model.Meta.table_name, model.Meta.region, model.Meta.host) != wanted:
            model.Meta.table_name, model.Meta.region, model.Meta.host = wanted
            model._connection = None
        model._get_connection().connection._client = client


def prime() -> None:
    """Take the first requests' one-time costs now, in the init phase, sending nothing.

    Every check's run opens with a Query of an index and reads the ledger with
    BatchGetItem: each is made once through the bound client with the members a run's
    requests and answers carry, and answered in-process (:func:`clients.prime`), so a
    function's first run pays what a warm one does. Call after :func:`bind`.
    """
    client = Notification._get_connection().connection.client
    table = Notification.Meta.table_name
    names = {"#0": "due_check", "#1": "due_on"}
    values = {":0": {"S": "prime"}, ":1": {"S": "2000-01-01"}}
    capacity = {"TableName": table, "CapacityUnits": 0.0}
    clients.prime(
        client,
        "Query",
        {
            "TableName": table,
            "IndexName": DueIndex.Meta.index_name,
            "KeyConditionExpression": "#0 = :0 AND #1 <= :1",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ReturnConsumedCapacity": "TOTAL",
        },
        {"Items": [], "Count": 0, "ScannedCount": 0, "ConsumedCapacity": capacity},
    )
    clients.prime(
        client,
        "BatchGetItem",
        {
            "RequestItems": {table: {"Keys": [{"id": {"S": "prime"}}]}},
            "ReturnConsumedCapacity": "TOTAL",
        },
        {"Responses": {table: []}, "UnprocessedKeys": {}, "ConsumedCapacity": [capacity]},
    )


@functools.cache
def _dynamodb(region: str, host: str | None, connections: int) -> Connection:
    """One PynamoDB connection per region and endpoint, on the container's botocore session."""
    connection = Connection(region=region, host=host, max_pool_connections=connections)
    # PynamoDB would start a session of its own per connection and thread.
    connection._local.session = clients.session()
    return connection
