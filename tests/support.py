"""Test helpers: business-time instants, what moto's SES captured, and fault injection."""

from __future__ import annotations

import base64
import email
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses
from typing import Any
from zoneinfo import ZoneInfo

import boto3
from botocore.awsrequest import AWSResponse
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.models import botocore_stubber
from moto.ses.models import ses_backends

REGION = "ap-southeast-2"
SYDNEY = ZoneInfo("Australia/Sydney")
SENDER = "reminders@lender.example.com.au"


def sydney(when: str) -> datetime:
    """An instant given as Sydney wall-clock time, e.g. ``sydney("2026-11-23 09:00")``."""
    return datetime.fromisoformat(when).replace(tzinfo=SYDNEY)


def utc(when: str) -> datetime:
    """An instant given as UTC, e.g. ``utc("2026-11-22 22:00")``."""
    return datetime.fromisoformat(when).replace(tzinfo=UTC)


@dataclass(frozen=True)
class SentEmail:
    """One message as moto's SES captured it, parsed back from its raw MIME."""

    message_id: str
    source: str
    recipients: list[str]
    subject: str
    text: str
    html: str
    message: EmailMessage


def sent_emails() -> list[SentEmail]:
    """Every message SES accepted in this test, oldest first."""
    captured = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    result = []
    for raw in captured:
        message = email.message_from_string(raw.raw_data, policy=default)
        assert isinstance(message, EmailMessage)
        text = message.get_body(preferencelist=("plain",))
        html = message.get_body(preferencelist=("html",))
        result.append(
            SentEmail(
                message_id=raw.id,
                source=raw.source,
                recipients=[addr for _, addr in getaddresses(message.get_all("To", []))],
                subject=str(message["Subject"]),
                text=text.get_content() if text is not None else "",
                html=html.get_content() if html is not None else "",
                message=message,
            )
        )
    return result


def subjects_by_recipient() -> dict[str, list[str]]:
    """``{recipient: [subjects]}`` of everything sent, for compact assertions."""
    out: dict[str, list[str]] = {}
    for sent in sent_emails():
        for recipient in sent.recipients:
            out.setdefault(recipient, []).append(sent.subject)
    return out


def ses_client(max_attempts: int = 1) -> Any:
    """A fresh SESv2 client without retries (botocore's retry sleeps are real)."""
    return boto3.client(
        "sesv2", region_name=REGION, config=Config(retries={"max_attempts": max_attempts})
    )


def ses_error(code: str, status: int = 400, message: str = "injected") -> tuple[Any, Any]:
    """A botocore ``before-call`` response that makes SES answer with an error."""
    response = AWSResponse("https://email.example", status, {}, None)  # type: ignore[arg-type]
    return response, {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


@contextmanager
def ses_faults(client: Any, decide: Callable[[str], Any]) -> Iterator[list[str]]:
    """Answer SES SendEmail with ``decide(recipient)`` when it returns a fault.

    ``decide`` returns ``None`` to let moto handle the call, a ``ses_error(...)``
    tuple to answer with an error, or an exception instance to raise (timeouts).
    Yields the list of recipients whose sends were attempted.
    """
    attempted: list[str] = []

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"])
        raw = base64.b64decode(body["Content"]["Raw"]["Data"])
        message = email.message_from_bytes(raw, policy=default)
        recipient = getaddresses(message.get_all("To", []))[0][1]
        attempted.append(recipient)
        fault = decide(recipient)
        if isinstance(fault, Exception):
            raise fault
        return fault

    client.meta.events.register("before-call.sesv2.SendEmail", before_call)
    try:
        yield attempted
    finally:
        client.meta.events.unregister("before-call.sesv2.SendEmail", before_call)


@contextmanager
def lost_responses(
    client: Any, operation: str, lose: Callable[[dict[str, Any]], bool]
) -> Iterator[list[dict[str, Any]]]:
    """Lose the response of every ``operation`` call whose JSON body ``lose`` picks.

    The request really is applied (by moto, or sent on to DynamoDB Local), then the
    client sees a ``ReadTimeoutError``, as when a response is lost on the network;
    botocore then retries as it would in Lambda. Yields the bodies of the lost calls.
    """
    lost: list[dict[str, Any]] = []
    service = client.meta.service_model.service_id.hyphenize()

    def before_send(request: Any, **kwargs: Any) -> None:
        body = json.loads(request.body or b"{}")
        if not lose(body):
            return
        response = botocore_stubber(request=request, **kwargs)
        if response is None:  # not mocked: DynamoDB Local
            URLLib3Session().send(request)
        lost.append(body)
        raise ReadTimeoutError(endpoint_url=request.url)

    client.meta.events.register_first(f"before-send.{service}.{operation}", before_send)
    try:
        yield lost
    finally:
        client.meta.events.unregister(f"before-send.{service}.{operation}", before_send)


def timeout_error() -> ReadTimeoutError:
    """What botocore raises when SES does not answer in time."""
    return ReadTimeoutError(endpoint_url="https://email.ap-southeast-2.amazonaws.com")


def run(
    check: str, at: datetime, client: Any = None, *, now: datetime | None = None, **options: Any
) -> Any:
    """Run ``check`` as scheduled at ``at``; ``now`` (the wall clock) defaults to ``at``."""
    from chalicelib.mailer import Mailer
    from chalicelib.runner import run_check

    mailer = Mailer(SENDER, REGION, client=client) if client is not None else None
    return run_check(check, at=at, now=now or at, mailer=mailer, **options)


def scheduled_event(
    client: Any, function: str, at: datetime, event_id: str | None = None
) -> dict[str, Any]:
    """The EventBridge event that triggers ``function`` at ``at`` (sent as UTC)."""
    event: dict[str, Any] = client.events.generate_cw_event(
        source="aws.events",
        detail_type="Scheduled Event",
        detail={},
        resources=[f"arn:aws:events:{REGION}:123456789012:rule/loan-reminders-dev-{function}"],
        region=REGION,
    )
    event["time"] = at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if event_id is not None:
        event["id"] = event_id
    return event
