"""Every place the soak touches the code under test, one small function each.

The soak is written against the interfaces of issue 7 (``handle_scheduled(..., now=,
remaining_ms=)``, ``EventTooOld``, the ``record_ses_events`` handler); where the code
in front of it differs, this is the one file to change.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from chalicelib import delivery, ledger, models, runner
from chalicelib.config import Settings
from chalicelib.mailer import ses_client


class _NeverRaised(Exception):
    """Stands in for an exception class the code does not define (yet)."""


#: A replayed event older than the retry horizon (issue 7, class 5).
EventTooOld: type[BaseException] = getattr(runner, "EventTooOld", _NeverRaised)
#: A run that left notices for Lambda's retry.
DeliveryIncomplete: type[BaseException] = delivery.DeliveryIncomplete


def invoke_scheduled(
    check: str, event: dict[str, Any], now: datetime, remaining_ms: Callable[[], int]
) -> dict[str, Any]:
    """One invocation of a scheduled function with ``event``, its clock at ``now``.

    Falls back to ``run_check`` for the event's time where ``handle_scheduled`` cannot
    take the simulated clock (it would read the real one).
    """
    accepts = inspect.signature(runner.handle_scheduled).parameters
    if "now" in accepts:
        extra = {"remaining_ms": remaining_ms} if "remaining_ms" in accepts else {}
        scheduled: Callable[..., dict[str, Any]] = runner.handle_scheduled
        return scheduled(check, event, now=now, **extra)
    summary = runner.run_check(check, at=runner.event_time(event), now=now)
    return summary.as_dict()


def ses_events_handler() -> Callable[[dict[str, Any], Any], Any] | None:
    """The Chalice function that records SES events on the ledger, if the app has one."""
    import app

    handler = getattr(app, "record_ses_events", None)
    return handler if callable(handler) else None


@dataclass
class LambdaContext:
    """What a Lambda handler may read from its context."""

    aws_request_id: str
    function_name: str = "record_ses_events"

    def get_remaining_time_in_millis(self) -> int:
        """Plenty: the SES event handler is not under test for its time budget."""
        return 300_000


def invoke_ses_event(event: dict[str, Any]) -> None:
    """Deliver one EventBridge SES event (Send, Delivery) to the app's handler."""
    handler = ses_events_handler()
    if handler is None:
        raise LookupError("app.py has no record_ses_events function")
    handler(event, LambdaContext(aws_request_id=str(event.get("id", ""))))


def failed_entries() -> Iterator[Any]:
    """Ledger entries that failed permanently (what ``cli retry-failed`` lists)."""
    return ledger.failed_entries()


def requeue(entry: Any, now: datetime) -> bool:
    """What ``cli retry-failed`` does to one entry: back to pending."""
    return ledger.requeue(entry, now)


def clients_in_use(settings: Settings) -> tuple[Any, list[Any]]:
    """The SESv2 client the mailer uses and the DynamoDB clients of PynamoDB's models."""
    models.bind(settings)
    dynamodb = [model._get_connection().connection.client for model in models.ALL_MODELS]
    return ses_client(settings.region), dynamodb
