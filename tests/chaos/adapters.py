"""Every place the soak touches the code under test, one small function each.

The soak drives the code through its entry points: ``runner.handle_scheduled`` (with a
Lambda context whose clock the time-budget fault controls), ``EventTooOld`` for events
past the horizon, and the ``record_ses_events`` Chalice handler of app.py for SES events.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.client import BaseClient
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import delivery, models, runner
from chalicelib.config import Settings
from chalicelib.mailer import ses_client

#: A replayed event older than the retry horizon (issue 7, class 5).
EventTooOld: type[BaseException] = runner.EventTooOld
#: A run that left notices for Lambda's retry.
DeliveryIncomplete: type[BaseException] = delivery.DeliveryIncomplete


def invoke_scheduled(
    check: str, event: dict[str, Any], now: datetime, remaining_ms: Callable[[], int]
) -> dict[str, Any]:
    """One invocation of a scheduled function with ``event``, its clock at ``now``.

    ``remaining_ms`` is the Lambda context's clock (the time budget fault shortens it).
    """
    context = LambdaContext(
        aws_request_id=str(event.get("id", "")),
        function_name=f"check_{check}",
        remaining=remaining_ms,
    )
    # A stand-in for Powertools' LambdaContext, whose attributes are read-only properties.
    return runner.handle_scheduled(check, event, context, now=now)  # type: ignore[arg-type]


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
    remaining: Callable[[], int] | None = None

    def get_remaining_time_in_millis(self) -> int:
        """The injected clock, or plenty (the SES event handler's budget is not under test)."""
        return self.remaining() if self.remaining is not None else 300_000


def invoke_ses_event(event: dict[str, Any]) -> None:
    """Deliver one EventBridge SES event (Send, Delivery) to the app's handler."""
    handler = ses_events_handler()
    if handler is None:
        raise LookupError("app.py has no record_ses_events function")
    handler(event, LambdaContext(aws_request_id=str(event.get("id", ""))))


def clients_in_use(settings: Settings) -> tuple[SESV2Client, list[BaseClient]]:
    """The SESv2 client the mailer uses and the DynamoDB clients of PynamoDB's models."""
    models.bind(settings)
    dynamodb: list[BaseClient] = [
        model._get_connection().connection.client for model in models.ALL_MODELS
    ]
    return ses_client(settings.region), dynamodb
