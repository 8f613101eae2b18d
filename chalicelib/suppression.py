"""Addresses that are not mailed again: SES reported a hard bounce or a complaint.

A permanent bounce or a complaint (see :mod:`chalicelib.ses_events`) puts the address on
SES's account-level suppression list and records it in the ledger table as the entry
``suppressed#<address, lower-cased>``. The key is the address itself, so a recipient
whose address the CRM changes is mailed again at the new one, and a run finds the
suppressed recipients of its notices with one BatchGetItem per 100 addresses.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final, Literal

from pynamodb.expressions.update import Action

from chalicelib import ledger
from chalicelib.limits import fits_key
from chalicelib.models import Notification

KIND = "suppression"
STATUS = "suppressed"
# SES's suppression reasons (PutSuppressedDestination's Reason).
Reason = Literal["BOUNCE", "COMPLAINT"]
BOUNCE: Final = "BOUNCE"
COMPLAINT: Final = "COMPLAINT"
PREFIX = "suppressed#"


def key(address: str) -> str:
    """The ledger key of an address's suppression entry (case-insensitive)."""
    return PREFIX + address.strip().lower()


def _storable(address: str) -> bool:
    # An address whose key is over DynamoDB's limit cannot have been suppressed.
    return bool(address.strip()) and fits_key(key(address))


def suppressed(addresses: Iterable[str]) -> dict[str, str]:
    """The given addresses that are suppressed, each with its reason (``BOUNCE``/``COMPLAINT``).

    Reads the suppression entries with BatchGetItem. Matching ignores case and
    surrounding spaces; the result is keyed by the address as given.
    """
    wanted: dict[str, list[str]] = {}
    for address in addresses:
        if isinstance(address, str) and _storable(address):
            wanted.setdefault(key(address), []).append(address)
    if not wanted:
        return {}
    found: dict[str, str] = {}
    for entry in Notification.batch_get(list(wanted), consistent_read=True):
        if entry.kind != KIND:
            continue
        for address in wanted.get(entry.id, []):
            found[address] = str(entry.suppression_reason or "")
    return found


def record(
    address: str,
    reason: Reason,
    *,
    at: datetime,
    now: datetime,
    source_key: str | None = None,
    message_id: str | None = None,
) -> bool:
    """Record ``address`` as suppressed for ``reason``; False when it already was.

    The first report wins: a later bounce or complaint for the same address keeps
    the original reason, time and source (a duplicate event changes nothing).
    """
    if not _storable(address):
        return False
    actions: list[Action] = [
        Notification.kind.set(KIND),
        Notification.status.set(STATUS),
        Notification.recipient_email.set(address.strip()),
        Notification.suppression_reason.set(reason),
        Notification.suppressed_at.set(at),
        Notification.created_at.set(now),
        Notification.updated_at.set(now),
    ]
    if source_key is not None:
        actions.append(Notification.suppressed_by.set(source_key))
    if message_id is not None:
        actions.append(Notification.message_id.set(message_id))
    return ledger.update_if(
        Notification(id=key(address)), actions, Notification.id.does_not_exist()
    )
