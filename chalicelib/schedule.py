"""The service's own schedule, in the ledger table: when a check looks at an item again.

A check that has handled an item (alerted a stale application, say) writes when the
item is next due: the entry ``due#<check>#<item id>`` with ``due_check`` and
``due_on``, the keys of the sparse ``due_check-due_on-index``. A run then reads what
is due with one Query instead of re-reading every item it already handled, so its
cost follows the notices due, not the history. Only entries of the schedule are in
that index; the notices' own ledger entries (and their keys) are unchanged and stay
the exactly-once guard.

A check that discovers new items from a CRM index by a moving bound records, per
check, how far it has looked (``sweep#<check>``: the business date of its last sweep
and the bound below which every item has been looked at).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from pynamodb.exceptions import UpdateError

from chalicelib import ledger
from chalicelib.limits import fits_key
from chalicelib.models import Notification

PREFIX = "due#"
SWEEP_PREFIX = "sweep#"


def key(check: str, item_id: str) -> str:
    """The schedule entry of one item of one check (ids escaped as in notice keys)."""
    return PREFIX + ledger.notice_key(check, item_id)


def _item_of(check: str, entry_key: str) -> str | None:
    """The item id of a schedule entry's key, or None when it is not ``check``'s."""
    start = PREFIX + ledger.notice_key(check) + "#"
    if not entry_key.startswith(start):
        return None
    return entry_key[len(start) :].replace("%23", "#").replace("%25", "%")


def due(check: str, today: date) -> list[str]:
    """The ids of ``check``'s items due on or before ``today`` (a Query of the sparse index)."""
    found = Notification.by_due.query(check, Notification.due_on <= today.isoformat())
    return [item for item in (_item_of(check, entry.id) for entry in found) if item is not None]


def fits(check: str, item_id: str) -> bool:
    """True when the item's schedule entry can be keyed (its id is within the key limit)."""
    return fits_key(key(check, item_id))


def reschedule(check: str, item_id: str, on: date) -> None:
    """Look at the item again on ``on`` (today: at every run until it is handled)."""
    Notification(id=key(check, item_id)).update(
        actions=[Notification.due_check.set(check), Notification.due_on.set(on.isoformat())]
    )


def unschedule(check: str, item_id: str) -> None:
    """Take the item off the schedule (it left the index: nothing will make it due)."""
    Notification(id=key(check, item_id)).update(
        actions=[Notification.due_check.remove(), Notification.due_on.remove()]
    )


@dataclass(frozen=True)
class Sweep:
    """How far a check has looked for new items: on which date, and below which bound."""

    swept_on: date
    below: str


def _sweep_key(check: str) -> str:
    return SWEEP_PREFIX + ledger.notice_key(check)


def last_sweep(check: str) -> Sweep | None:
    """The check's latest sweep, or None when it has never swept (a BatchGetItem)."""
    connection = Notification._get_connection()
    # Read raw: the entry is not a notice, so the Notification model would call it unreadable.
    # (PynamoDB's annotation says str keys; the connection takes attribute maps.)
    answer = connection.batch_get_item([{"id": _sweep_key(check)}])  # type: ignore[list-item]
    for item in answer.get("Responses", {}).get(Notification.Meta.table_name, []):
        swept_on = item.get("swept_on", {}).get("S")
        below = item.get("swept_below", {}).get("S")
        if swept_on is not None and below is not None:
            return Sweep(date.fromisoformat(swept_on), below)
    return None


def record_sweep(check: str, sweep: Sweep) -> None:
    """Record a sweep, unless a later one is already recorded (a late run never rewinds)."""
    try:
        Notification(id=_sweep_key(check)).update(
            actions=[
                Notification.swept_on.set(sweep.swept_on.isoformat()),
                Notification.swept_below.set(sweep.below),
            ],
            condition=Notification.swept_on.does_not_exist()
            | (Notification.swept_on < sweep.swept_on.isoformat()),
        )
    except UpdateError as exc:
        if exc.cause_response_code != "ConditionalCheckFailedException":
            raise


def forget_sweep(check: str) -> None:
    """Make the check's next run sweep everything again (after items were written back-dated).

    A sweep starts where the last one stopped, so an item written later with a date
    already below that bound (an import of old records) would never be found.
    """
    Notification(id=_sweep_key(check)).update(
        actions=[Notification.swept_on.remove(), Notification.swept_below.remove()]
    )


def string_sets(keys: list[str]) -> dict[str, set[str]]:
    """The ``done_notes`` sets of the given entries (BatchGetItem, eventually consistent).

    An eventually consistent read may miss the latest additions: an item it misses
    is only read the longer way, never skipped wrongly.
    """
    connection = Notification._get_connection()
    found: dict[str, set[str]] = {}
    for start in range(0, len(keys), 100):
        # PynamoDB's annotation says str keys; the connection takes attribute maps.
        pending: list[Any] = [{"id": k} for k in keys[start : start + 100]]
        while pending:
            answer = connection.batch_get_item(pending)
            for item in answer.get("Responses", {}).get(Notification.Meta.table_name, []):
                found[item["id"]["S"]] = set(item.get("done_notes", {}).get("SS", []))
            unprocessed = answer.get("UnprocessedKeys", {}).get(Notification.Meta.table_name)
            pending = [{"id": key["id"]["S"]} for key in (unprocessed or {}).get("Keys", [])]
    return found


def add_to_set(entry_key: str, values: set[str]) -> None:
    """Add ``values`` to an entry's ``done_notes`` set (one UpdateItem)."""
    Notification(id=entry_key).update(actions=[Notification.done_notes.add(values)])


def forget_set(entry_key: str) -> None:
    """Drop an entry's ``done_notes`` set, so its items are read the longer way again."""
    Notification(id=entry_key).update(actions=[Notification.done_notes.remove()])
