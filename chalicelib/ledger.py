"""The delivery ledger: conditional writes that let each notice go out exactly once.

A notice is claimed with a conditional write before it is sent, so re-delivered
events, retries and overlapping runs cannot send it twice. A claim whose run died
between sending and recording (its lease ran out) is never re-sent automatically:
SES may already have delivered it, so it is recorded as failed for an operator.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, cast

from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError
from pynamodb.expressions.condition import Condition
from pynamodb.expressions.update import Action

from chalicelib.models import Notification

if TYPE_CHECKING:  # the stubs are a dev dependency; Lambda never imports them
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

CLAIMED = "claimed"
SENT = "sent"
PENDING = "pending"
FAILED = "failed"
# SES may or may not have accepted the message (a lost response, an interrupted run):
# settled by SES's Send event, or due again after the settling window without one.
UNKNOWN = "unknown"
IN_FLIGHT = "in_flight"
# SES's event type for a message it accepted but will not deliver (ses_events.REJECT).
REJECTED = "Reject"
ABANDONED = "abandoned"

# Longer than a Lambda function can run, so a live run never loses its claim.
CLAIM_LEASE = timedelta(minutes=15)
INTERRUPTED = "interrupted after claiming: SES may or may not have delivered it"


def notice_key(*parts: object) -> str:
    """The ledger key of a notice: its parts joined by ``#``, each part escaped.

    CRM ids are arbitrary strings. Joined as they are, note ``n`` to staff
    ``x#2026-11-23#y`` and note ``n#2026-11-23#x`` to staff ``y`` would share a key,
    and the second notice would be skipped as already sent. ``%`` and ``#`` inside a
    part are percent-encoded, so parts without them (every id the CRM issues) keep
    the keys the ledger already holds.
    """
    return "#".join(str(part).replace("%", "%25").replace("#", "%23") for part in parts)


@dataclass(frozen=True)
class Claim:
    """What the ledger records about a notice when a run claims it."""

    key: str
    kind: str
    item_id: str
    recipient_id: str
    recipient_email: str
    business_date: str
    # Tags the message, so SES's events for it find this entry (the send_token index).
    send_token: str | None = None


def lookup(keys: Iterable[str]) -> dict[str, Notification]:
    """Fetch the ledger entries for ``keys`` with BatchGetItem."""
    unique = list(dict.fromkeys(keys))
    if not unique:
        return {}
    return {entry.id: entry for entry in Notification.batch_get(unique, consistent_read=True)}


def state(entry: Notification | None, now: datetime, settle: timedelta | None = None) -> str:
    """Classify an entry: claimable (``pending``), done, ``in_flight`` or ``abandoned``.

    With a ``settle`` window (SES events are published), an ``unknown`` entry or an
    expired claim that no Send event settled within the window is due again
    (``pending``); until then it is left alone. Without one, an expired claim is
    ``abandoned`` (recorded as failed for an operator: nothing can settle it).
    """
    if entry is None or entry.status == PENDING:
        return PENDING
    if entry.status == CLAIMED:
        if entry.lease_expires_at > now:
            return IN_FLIGHT
        if settle is None:
            return ABANDONED
        return PENDING if entry.claimed_at + settle <= now else IN_FLIGHT
    if entry.status == UNKNOWN and settle is not None and entry.updated_at + settle <= now:
        return PENDING
    return str(entry.status)


def address_key(address: str) -> str:
    """How an entry's recipient address is stored: lower-cased (runs strip it already).

    The recipient index is keyed by it, so `history --recipient` finds an address
    whatever its case in the CRM with one Query.
    """
    return address.lower()


def claim(claim: Claim, run_id: str, now: datetime, settle: timedelta | None = None) -> bool:
    """Claim a due notice for this run; False when another run has it or it is done.

    A lost response makes botocore send the claim again, which then fails against
    the claim it made itself: the old item it returns tells our claim (same run and
    token) from another run's, so the notice is still sent exactly once.
    """
    condition = Notification.id.does_not_exist() | (Notification.status == PENDING)
    if settle is not None:
        cutoff = now - settle
        condition = (
            condition
            | ((Notification.status == UNKNOWN) & (Notification.updated_at <= cutoff))
            | (
                (Notification.status == CLAIMED)
                & (Notification.lease_expires_at <= now)
                & (Notification.claimed_at <= cutoff)
            )
        )
    actions: list[Action] = [
        Notification.kind.set(claim.kind),
        Notification.item_id.set(claim.item_id),
        Notification.recipient_id.set(claim.recipient_id),
        Notification.recipient_email.set(address_key(claim.recipient_email)),
        Notification.business_date.set(claim.business_date),
        Notification.status.set(CLAIMED),
        Notification.run_id.set(run_id),
        Notification.attempts.add(1),
        Notification.created_at.set(Notification.created_at | now),
        Notification.claimed_at.set(now),
        Notification.updated_at.set(now),
        Notification.lease_expires_at.set(now + CLAIM_LEASE),
    ]
    if claim.send_token:
        actions.append(Notification.send_token.set(claim.send_token))
    applied, old = _conditional_update(claim.key, actions, condition)
    if applied:
        return True
    return (
        old is not None
        and old.get("status") == CLAIMED
        and old.get("run_id") == run_id
        and old.get("send_token") == claim.send_token
    )


def mark_sent(key: str, run_id: str, subject: str, message_id: str, now: datetime) -> None:
    """Record delivery. Wins even over an ``abandoned`` verdict: the mail did go out.

    Never over SES's Reject: SES will not deliver that message, and a retry of this
    write (its answer lost) can arrive after the Reject event failed the entry.
    """
    Notification(id=key).update(
        actions=[
            Notification.status.set(SENT),
            Notification.subject.set(subject),
            Notification.message_id.set(message_id),
            Notification.sent_at.set(now),
            Notification.updated_at.set(now),
            *_clear_failure(),
        ],
        condition=(Notification.run_id == run_id) & ~Notification.ses_events.contains(REJECTED),
    )


def release(key: str, run_id: str, error: str, now: datetime) -> None:
    """Give a claim back after a transient failure so the next run retries it."""
    _finish(key, run_id, PENDING, now, last_error=error)


def mark_failed(key: str, run_id: str, subject: str, reason: str, now: datetime) -> None:
    """Record a permanent rejection; the notice is not retried until re-queued."""
    _finish(key, run_id, FAILED, now, last_error=reason, failure_reason=reason, subject=subject)


def mark_unknown(key: str, run_id: str, subject: str, error: str, now: datetime) -> None:
    """Record a send whose outcome is unknown (SES may have accepted it); never resent blindly."""
    _finish(key, run_id, UNKNOWN, now, last_error=error, subject=subject)


def abandon(entry: Notification, now: datetime) -> bool:
    """Mark a claim whose lease expired as failed; False if its run finished meanwhile."""
    return update_if(
        entry,
        [
            Notification.status.set(FAILED),
            Notification.failed_status.set(FAILED),
            Notification.failed_at.set(now),
            Notification.failure_reason.set(INTERRUPTED),
            Notification.updated_at.set(now),
            Notification.last_error.set(f"{INTERRUPTED} (run {entry.run_id})"),
        ],
        (Notification.status == CLAIMED) & (Notification.run_id == entry.run_id),
    )


class LedgerConflict(RuntimeError):
    """A finishing write found the entry neither claimed by this run nor already finished."""


def _finish(
    key: str,
    run_id: str,
    status: str,
    now: datetime,
    *,
    last_error: str,
    failure_reason: str | None = None,
    subject: str | None = None,
) -> None:
    """Move this run's claim to ``status``; idempotent, so a lost response is harmless.

    botocore re-sends a write whose response was lost; the retry then fails its
    condition against the state the first attempt wrote, which is success.
    """
    actions: list[Action] = [
        Notification.status.set(status),
        Notification.last_error.set(last_error[:1000]),
        Notification.updated_at.set(now),
    ]
    if failure_reason is not None:
        actions.append(Notification.failure_reason.set(failure_reason[:1000]))
    if status == FAILED:
        actions += [Notification.failed_status.set(FAILED), Notification.failed_at.set(now)]
    if subject is not None:
        actions.append(Notification.subject.set(subject))
    applied, old = _conditional_update(
        key, actions, (Notification.status == CLAIMED) & (Notification.run_id == run_id)
    )
    if applied or (old is not None and old.get("status") == status and old.get("run_id") == run_id):
        return
    found = (
        "no entry" if old is None else f"status {old.get('status')!r} of run {old.get('run_id')!r}"
    )
    raise LedgerConflict(f"{key}: expected this run's claim, found {found}")


def failed_entries(kinds: Iterable[str] = (), item_id: str | None = None) -> Iterator[Notification]:
    """Entries that failed permanently, oldest failure first, optionally of some kinds/item.

    Reads the sparse ``failed_status-failed_at-index``: only failed entries are in it,
    so this is a Query of exactly those, never a Scan of the ledger.
    """
    conditions: list[Condition] = []
    wanted = list(kinds)
    if wanted:
        conditions.append(Notification.kind.is_in(*wanted))
    if item_id is not None:
        conditions.append(Notification.item_id == item_id)
    condition = functools.reduce(operator.and_, conditions) if conditions else None
    yield from Notification.by_failure.query(FAILED, filter_condition=condition)


def requeue(entry: Notification, now: datetime) -> bool:
    """Put a failed entry back to ``pending`` so the next run that finds it due sends it.

    ``attempts`` and ``last_error`` are kept for the record; the failure marker and
    reason go. False when the entry is no longer failed (re-queued meanwhile).
    """
    return update_if(
        entry,
        [Notification.status.set(PENDING), Notification.updated_at.set(now), *_clear_failure()],
        Notification.status == FAILED,
    )


def _clear_failure() -> list[Action]:
    """Actions that drop the failure reason and the sparse index's failure marker."""
    return [
        Notification.failure_reason.remove(),
        Notification.failed_status.remove(),
        Notification.failed_at.remove(),
    ]


def _conditional_update(
    key: str, actions: list[Action], condition: Condition
) -> tuple[bool, dict[str, str] | None]:
    """UpdateItem under ``condition``: (True, None) when applied, else (False, old item).

    PynamoDB has no ``ReturnValuesOnConditionCheckFailure``, so the request is built
    by its connection and the parameter added; the old item's string and number
    attributes come back as plain strings.
    """
    connection = Notification._get_connection().connection
    request = connection.get_operation_kwargs(
        table_name=Notification.Meta.table_name,
        hash_key=key,
        actions=actions,
        condition=condition,
    )
    request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
    try:
        connection.dispatch("UpdateItem", request)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
            raise
        cause = exc.__cause__ if isinstance(exc.__cause__, ClientError) else exc
        # DynamoDB returns the item that failed the condition in its error response.
        item = cast("Mapping[str, AttributeValueTypeDef]", cause.response.get("Item") or {})
        if not item:
            return False, None
        return False, {name: str(next(iter(value.values()))) for name, value in item.items()}
    return True, None


def update_if(entry: Notification, actions: list[Action], condition: Condition) -> bool:
    """Apply ``actions`` when ``condition`` holds; False (not an error) when it does not."""
    try:
        entry.update(actions=actions, condition=condition)
    except UpdateError as exc:
        if exc.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True
