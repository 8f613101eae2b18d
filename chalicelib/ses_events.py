"""SES's own record of each message, applied to the delivery ledger.

Every message is sent through the stage's configuration set and tagged with the send
token its ledger entries carry. SES publishes the message's events (Send, Delivery,
Bounce, Complaint, Reject, DeliveryDelay) to the default EventBridge bus, and the
``record_ses_events`` function applies each one to those entries, found through the
sparse ``send_token-index`` (a Query, never a Scan):

* any event but Reject means SES accepted the message: an entry that is ``unknown``,
  still ``claimed`` (its run was interrupted), ``pending``, or failed as interrupted
  becomes ``sent`` with SES's message id and time;
* every event is recorded on the entry (``ses_events`` and ``delivered_at``,
  ``bounced_at``/``bounce_type``, ``complained_at``, ``delayed_at``, ``rejected_at``/
  ``rejected_reason``), so ``history`` shows it;
* a Reject (SES refused to deliver, e.g. a virus) makes the entry ``failed``;
* a permanent bounce or a complaint suppresses the address (:mod:`chalicelib.suppression`).

Events arrive late, duplicated and out of order: every write is conditional on the
entry still carrying the event's token (a newer attempt has a new one) and on that
event type not being recorded yet, so applying an event twice, or in any order,
ends in the same ledger.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib import ledger, models, registry, suppression
from chalicelib import observability as metric
from chalicelib.config import Settings
from chalicelib.mailer import SEND_TAG, ses_client
from chalicelib.models import Notification
from chalicelib.observability import logger, publish_counts

if TYPE_CHECKING:  # the stubs are a dev dependency; Lambda never imports them
    from mypy_boto3_sesv2 import SESV2Client

SOURCE = "aws.ses"
SEND = "Send"
DELIVERY = "Delivery"
BOUNCE = "Bounce"
COMPLAINT = "Complaint"
REJECT = ledger.REJECTED
DELIVERY_DELAY = "DeliveryDelay"
# EventBridge's detail-type of each event type the configuration set publishes.
DETAIL_TYPES: dict[str, str] = {
    "Email Sent": SEND,
    "Email Delivered": DELIVERY,
    "Email Bounced": BOUNCE,
    "Email Complaint Received": COMPLAINT,
    "Email Rejected": REJECT,
    "Email Delivery Delayed": DELIVERY_DELAY,
}
# The event pattern of the EventBridge rule (app.py).
EVENT_PATTERN: dict[str, list[str]] = {"source": [SOURCE], "detail-type": list(DETAIL_TYPES)}
# Everything but a Reject happens only to a message SES accepted.
ACCEPTED = frozenset({SEND, DELIVERY, BOUNCE, COMPLAINT, DELIVERY_DELAY})
# Statuses SES's record settles: SES may or may not have accepted the message.
SETTLEABLE = (ledger.UNKNOWN, ledger.CLAIMED, ledger.PENDING)
CONFIGURATION_SET_TAG = "ses:configuration-set"
PERMANENT = "Permanent"


class InvalidSesEvent(ValueError):
    """An event this handler cannot use (not from SES, or missing what it needs)."""


@dataclass(frozen=True)
class SesEvent:
    """One SES event about one message, as the ledger needs it."""

    type: str
    message_id: str
    token: str | None
    configuration_set: str | None
    # When SES accepted the message (``mail.timestamp``), and when this event happened.
    sent_at: datetime
    at: datetime
    bounce_type: str | None = None
    reject_reason: str | None = None
    # The addresses a bounce or complaint is about.
    recipients: tuple[str, ...] = ()

    @property
    def suppression_reason(self) -> suppression.Reason | None:
        """``BOUNCE`` for a permanent bounce, ``COMPLAINT`` for a complaint, else None."""
        if self.type == COMPLAINT:
            return suppression.COMPLAINT
        if self.type == BOUNCE and (self.bounce_type or "").startswith(PERMANENT):
            return suppression.BOUNCE
        return None


@dataclass
class Outcome:
    """What one event changed; returned by the Lambda function and logged."""

    event_type: str
    message_id: str
    ignored: str | None = None
    entries: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    recorded: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The outcome as plain JSON-ready data."""
        return asdict(self)


def _instant(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise InvalidSesEvent(f"{name} is missing")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidSesEvent(f"{name} {value!r} is not ISO-8601") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _first_tag(tags: Mapping[str, object], name: str) -> str | None:
    values = tags.get(name)
    if isinstance(values, list) and values and isinstance(values[0], str):
        return values[0]
    return values if isinstance(values, str) else None


def _addresses(records: object) -> tuple[str, ...]:
    if not isinstance(records, list):
        return ()
    return tuple(
        r["emailAddress"]
        for r in records
        if isinstance(r, Mapping) and isinstance(r.get("emailAddress"), str)
    )


def parse(event: Mapping[str, object]) -> SesEvent:
    """Read an EventBridge SES event (``source`` ``aws.ses``), or raise :class:`InvalidSesEvent`."""
    if event.get("source") != SOURCE:
        raise InvalidSesEvent(f"source {event.get('source')!r} is not {SOURCE}")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        raise InvalidSesEvent("detail is missing")
    kind = detail.get("eventType") or DETAIL_TYPES.get(str(event.get("detail-type")))
    if not isinstance(kind, str) or kind not in DETAIL_TYPES.values():
        raise InvalidSesEvent(f"event type {kind!r} is not recorded")
    mail = detail.get("mail")
    if not isinstance(mail, Mapping) or not isinstance(mail.get("messageId"), str):
        raise InvalidSesEvent("mail.messageId is missing")
    sent_at = _instant(mail.get("timestamp"), "mail.timestamp")
    raw_tags = mail.get("tags")
    tags: Mapping[str, object] = raw_tags if isinstance(raw_tags, Mapping) else {}
    body = detail.get(kind[0].lower() + kind[1:])
    body = body if isinstance(body, Mapping) else {}
    at = _instant(body["timestamp"], f"{kind} timestamp") if "timestamp" in body else sent_at
    bounce_type = None
    if kind == BOUNCE:
        bounce_type = str(body.get("bounceType") or "Undetermined")
        if body.get("bounceSubType"):
            bounce_type += f"/{body['bounceSubType']}"
    reason = str(body.get("reason") or "no reason given") if kind == REJECT else None
    recipients = _addresses(body.get("bouncedRecipients") or body.get("complainedRecipients"))
    return SesEvent(
        type=str(kind),
        message_id=str(mail["messageId"]),
        token=_first_tag(tags, SEND_TAG),
        configuration_set=_first_tag(tags, CONFIGURATION_SET_TAG),
        sent_at=sent_at,
        at=at,
        bounce_type=bounce_type,
        reject_reason=reason,
        recipients=recipients,
    )


def handle(event: Mapping[str, object]) -> dict[str, Any]:
    """Entry point of the ``record_ses_events`` function: apply one EventBridge SES event."""
    event_id = event.get("id")
    logger.set_correlation_id(event_id if isinstance(event_id, str) else None)
    settings = Settings.from_env()
    try:
        parsed = parse(event)
    except InvalidSesEvent as exc:
        logger.warning("unusable SES event ignored", extra={"reason": str(exc)})
        return {"ignored": str(exc)}
    return record_event(parsed, settings=settings, now=datetime.now(UTC)).as_dict()


def record_event(
    event: SesEvent,
    *,
    settings: Settings,
    now: datetime,
    client: SESV2Client | None = None,
    emit_metrics: bool = True,
) -> Outcome:
    """Apply ``event`` to the ledger entries of its message; see the module docstring.

    Events of another configuration set (another stage) and events whose token no
    entry carries any more are logged and ignored. ``client`` is the SESv2 client for
    the suppression list (default: the shared one).
    """
    # Kept whole because the order is the contract: ignore what is not ours, apply the
    # event to every entry of the message, then suppress the address (naming the first
    # entry), and only then log and count what was applied.
    outcome = Outcome(event_type=event.type, message_id=event.message_id)
    if event.configuration_set != settings.ses_configuration_set:
        outcome.ignored = f"configuration set {event.configuration_set!r} is not this stage's"
    elif not event.token:
        outcome.ignored = f"message has no {SEND_TAG} tag"
    if outcome.ignored:
        logger.info("SES event ignored", extra=_log(outcome))
        return outcome
    assert event.token is not None
    models.bind(settings)
    keys = [entry.id for entry in Notification.by_send_token.query(event.token)]
    outcome.entries = keys
    if not keys:
        outcome.ignored = "no ledger entry carries its send token (unknown, or a newer attempt)"
        logger.info("SES event ignored", extra=_log(outcome))
        return outcome
    counts: dict[str, Counter[str]] = {}
    sources: list[Notification] = []
    for key in keys:
        entry = _apply(event, key, now, outcome)
        if entry is not None:
            sources.append(entry)
            counts.setdefault(check_of(str(entry.kind)), Counter()).update(
                _metrics(event, key, outcome)
            )
    reason = event.suppression_reason
    if reason is not None:
        _suppress(
            event,
            reason,
            keys[0],
            now,
            client or ses_client(settings.region, settings.send.send_concurrency),
            outcome,
        )
    logger.info("SES event recorded", extra=_log(outcome))
    if emit_metrics:
        for check, counted in sorted(counts.items()):
            if counted:
                publish_counts(check, dict(counted))
    return outcome


def _apply(event: SesEvent, key: str, now: datetime, outcome: Outcome) -> Notification | None:
    """Apply the event to one entry; the updated entry, or None when nothing changed."""
    entry = Notification(id=key)
    record = _record_actions(event, now)
    fresh = (Notification.send_token == event.token) & ~Notification.ses_events.contains(event.type)
    if event.type == REJECT:
        if not ledger.update_if(entry, _reject_actions(event, now) + record, fresh):
            return None
        outcome.rejected.append(key)
    elif event.type in ACCEPTED and ledger.update_if(
        entry, _settle_actions(event, now) + record, fresh & _settleable()
    ):
        outcome.settled.append(key)
    elif ledger.update_if(entry, record, fresh):
        outcome.recorded.append(key)
    else:
        return None
    return entry


def _settleable() -> Condition:
    interrupted = (Notification.status == ledger.FAILED) & (
        Notification.failure_reason == ledger.INTERRUPTED
    )
    condition: Condition = Notification.status.is_in(*SETTLEABLE) | interrupted
    return condition


def _settle_actions(event: SesEvent, now: datetime) -> list[Action]:
    return [
        Notification.status.set(ledger.SENT),
        Notification.message_id.set(event.message_id),
        Notification.sent_at.set(event.sent_at),
        Notification.updated_at.set(now),
        Notification.failure_reason.remove(),
        Notification.failed_status.remove(),
        Notification.failed_at.remove(),
    ]


def _reject_actions(event: SesEvent, now: datetime) -> list[Action]:
    # SES accepted the call but will not deliver it: whatever the run recorded, it
    # was not delivered, so it is failed (a Send event for it may come before or after).
    reason = f"rejected by SES: {event.reject_reason}"[:1000]
    return [
        Notification.status.set(ledger.FAILED),
        Notification.failed_status.set(ledger.FAILED),
        Notification.failed_at.set(now),
        Notification.failure_reason.set(reason),
        Notification.last_error.set(reason),
        Notification.message_id.set(event.message_id),
        Notification.updated_at.set(now),
    ]


def _record_actions(event: SesEvent, now: datetime) -> list[Action]:
    actions: list[Action] = [Notification.ses_events.add({event.type})]
    if event.type == DELIVERY:
        actions.append(Notification.delivered_at.set(event.at))
    elif event.type == DELIVERY_DELAY:
        actions.append(Notification.delayed_at.set(event.at))
    elif event.type == BOUNCE:
        actions += [
            Notification.bounced_at.set(event.at),
            Notification.bounce_type.set(str(event.bounce_type)),
        ]
    elif event.type == COMPLAINT:
        actions.append(Notification.complained_at.set(event.at))
    elif event.type == REJECT:
        actions += [
            Notification.rejected_at.set(event.at),
            Notification.rejected_reason.set(str(event.reject_reason)[:1000]),
        ]
    return actions


def _suppress(
    event: SesEvent,
    reason: suppression.Reason,
    source_key: str,
    now: datetime,
    client: SESV2Client,
    outcome: Outcome,
) -> None:
    # The ledger first (the runs' own gate), then SES's list; both are idempotent, so
    # a retry of this event after a failed SES call completes what is missing.
    for address in event.recipients:
        suppression.record(
            address,
            reason,
            at=event.at,
            now=now,
            source_key=source_key,
            message_id=event.message_id,
        )
        client.put_suppressed_destination(EmailAddress=address, Reason=reason)
        outcome.suppressed.append(address)


def check_of(kind: str) -> str:
    """The check a ledger entry's ``kind`` belongs to (its metrics' ``check`` dimension)."""
    known = registry.KINDS.get(kind)
    return known.check if known is not None else kind


def _metrics(event: SesEvent, key: str, outcome: Outcome) -> dict[str, int]:
    counted: dict[str, int] = {}
    if key in outcome.settled:
        counted[metric.NOTICES_SETTLED] = 1
    name = {
        DELIVERY: metric.NOTICES_DELIVERED,
        DELIVERY_DELAY: metric.NOTICES_DELAYED,
        COMPLAINT: metric.NOTICES_COMPLAINED,
        REJECT: metric.NOTICES_REJECTED,
        BOUNCE: metric.NOTICES_BOUNCED if event.suppression_reason else metric.NOTICES_SOFT_BOUNCED,
    }.get(event.type)
    if name is not None:
        counted[name] = 1
    return counted


def _log(outcome: Outcome) -> dict[str, Any]:
    return {"ses_event": outcome.as_dict()}
