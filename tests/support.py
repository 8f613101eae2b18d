"""Test helpers: business-time instants, what moto's SES captured, and fault injection."""

from __future__ import annotations

import base64
import copy
import dataclasses
import email
import functools
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.policy import default
from email.utils import getaddresses
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote
from zoneinfo import ZoneInfo

import boto3
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from botocore.handlers import BUILTIN_HANDLERS
from botocore.httpsession import URLLib3Session
from moto.core.models import DEFAULT_ACCOUNT_ID, botocore_stubber
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.ses.models import ses_backends
from mypy_boto3_sesv2 import SESV2Client

from chalicelib.config import Lender
from chalicelib.models import Notification, bind
from chalicelib.sending import SYSTEM_CLOCK, Clock
from ops.demo import LENDER_ENVIRONMENT
from ops.provisioning import provision
from ops.stages import REGION as REGION

if TYPE_CHECKING:
    from chalice.test import Client

    from chalicelib.config import Settings
    from chalicelib.run import RunSummary

SYDNEY = ZoneInfo("Australia/Sydney")
SENDER = "reminders@lender.example.com.au"
SES_EVENTS = Path(__file__).parent / "fixtures" / "ses_events"
# The values the recorded SES events carry (tests/fixtures/ses_events/*.json).
FIXTURE_TOKEN = "3f1c2b9e7a4d4e0b8c6a5d2f1e0b9a87"
FIXTURE_MESSAGE_ID = "010801937f4a9b2c-5e1d7f3a-2b8c-4d6e-9f1a-3c5b7d9e1f20-000000"
FIXTURE_ADDRESS = "ben.lee@example.net"
FIXTURE_CONFIGURATION_SET = "loan-reminders-dev"
# A complete environment for Settings.from_env, with "u-" table names unlike the test stage's.
BASE_ENV = {
    "APPLICATIONS_TABLE": "u-applications",
    "NOTES_TABLE": "u-notes",
    "REPAYMENTS_TABLE": "u-repayments",
    "STAFF_TABLE": "u-staff",
    "BORROWERS_TABLE": "u-borrowers",
    "NOTIFICATIONS_TABLE": "u-notifications",
    "SENDER_EMAIL": SENDER,
    **LENDER_ENVIRONMENT,
    "AWS_REGION": REGION,
}
# The lender the tests' emails come from (ops.demo's placeholders).
LENDER = Lender.from_env(LENDER_ENVIRONMENT)


# The only top-level headers a notice may carry, in this order (lower-cased).
TOP_LEVEL_HEADERS = [
    "from",
    "to",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
]


def warm_moto_sesv2(client: SESV2Client) -> None:
    """Make moto build its SESv2 request router now, from one thread.

    moto builds it on a service's first request, with ``ast.parse`` (werkzeug), and
    CPython 3.11's ast is not thread-safe: a run's send workers making the first SESv2
    request together can fail one send with ``SystemError: AST constructor recursion
    depth mismatch``. Any request builds it; this one reads nothing a test looks at.
    """
    client.list_email_identities()


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


@functools.cache
def aws_session() -> boto3.session.Session:
    """The boto3 session the tests make their own clients from, one per process.

    moto gives boto3's default session up at every mock's start, and a session costs
    several times the client made from it; the mock answers every session's clients
    (moto's handler is one of botocore's built-in handlers, which each session copies).
    """
    return boto3.session.Session(region_name=REGION)


def ses_client(max_attempts: int = 1) -> SESV2Client:
    """A fresh SESv2 client without retries (botocore's retry sleeps are real)."""
    return aws_session().client("sesv2", config=Config(retries={"max_attempts": max_attempts}))


def verify_sender(address: str = SENDER) -> None:
    """Verify ``address`` in SES (moto sends from verified identities only)."""
    aws_session().client("ses").verify_email_identity(EmailAddress=address)


# What a botocore ``before-call`` handler answers: an HTTP response and its parsed body.
Answer = tuple[AWSResponse, dict[str, object]]
# What a fault decision returns: nothing (moto answers), an answer, or an exception to raise.
Fault = Answer | Exception | None


def ses_error(code: str, status: int = 400, message: str = "injected") -> Answer:
    """A botocore ``before-call`` response that makes SES answer with an error."""
    # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
    response = AWSResponse("https://email.example", status, {}, None)  # type: ignore[arg-type]
    return response, {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


@contextmanager
def ses_faults(client: SESV2Client, decide: Callable[[str], Fault]) -> Iterator[list[str]]:
    """Answer SES SendEmail with ``decide(recipient)`` when it returns a fault.

    ``decide`` returns ``None`` to let moto handle the call, a ``ses_error(...)``
    tuple to answer with an error, or an exception instance to raise (timeouts).
    Yields the list of recipients whose sends were attempted.
    """
    attempted: list[str] = []

    def before_call(params: dict[str, Any], **_: object) -> Answer | None:
        body = json.loads(params["body"])
        raw = base64.b64decode(body["Content"]["Raw"]["Data"])
        message = email.message_from_bytes(raw, policy=default)
        recipient = getaddresses(message.get_all("To", []))[0][1]
        attempted.append(recipient)
        fault = decide(recipient)
        if isinstance(fault, Exception):
            raise fault
        return fault

    # botocore-stubs type every handler as returning None; a before-call handler's answer
    # replaces the call.
    client.meta.events.register("before-call.sesv2.SendEmail", before_call)  # type: ignore[arg-type]
    try:
        yield attempted
    finally:
        client.meta.events.unregister("before-call.sesv2.SendEmail", before_call)  # type: ignore[arg-type]


@contextmanager
def lost_responses(
    client: BaseClient, operation: str, lose: Callable[[dict[str, Any]], bool]
) -> Iterator[list[dict[str, Any]]]:
    """Lose the response of every ``operation`` call whose JSON body ``lose`` picks.

    The request really is applied (by moto, or sent on to DynamoDB Local), then the
    client sees a ``ReadTimeoutError``, as when a response is lost on the network;
    botocore then retries as it would in Lambda. Yields the bodies of the lost calls.
    """
    lost: list[dict[str, Any]] = []
    service = client.meta.service_model.service_id.hyphenize()

    def before_send(request: AWSPreparedRequest, **kwargs: Any) -> None:
        raw = request.body or b"{}"
        assert isinstance(raw, (str, bytes)), "a JSON protocol's request body is not a stream"
        body = json.loads(raw)
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
    return ReadTimeoutError(endpoint_url=f"https://email.{REGION}.amazonaws.com")


def run(
    check: str,
    at: datetime,
    client: SESV2Client | None = None,
    *,
    now: datetime | None = None,
    settings: Settings | None = None,
    ignore_window: bool = False,
    dry_run: bool = False,
    remaining_ms: Callable[[], int] | None = None,
    clock: Clock | None = None,
) -> RunSummary:
    """Run ``check`` as scheduled at ``at``; ``now`` (the wall clock) defaults to ``at``.

    ``clock`` paces the run's sends (a :class:`FakeClock`; the system's by default).
    """
    from chalicelib.mailer import Mailer
    from chalicelib.runner import run_check

    mailer = None
    if client is not None:
        mailer = Mailer(SENDER, REGION, client=client, clock=clock or SYSTEM_CLOCK, lender=LENDER)
    return run_check(
        check,
        at=at,
        now=now or at,
        settings=settings,
        mailer=mailer,
        ignore_window=ignore_window,
        dry_run=dry_run,
        remaining_ms=remaining_ms,
    )


def scheduled_event(
    client: Client, function: str, at: datetime, event_id: str | None = None
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


def ses_event(
    name: str,
    *,
    token: str | None = FIXTURE_TOKEN,
    message_id: str = FIXTURE_MESSAGE_ID,
    address: str = FIXTURE_ADDRESS,
    configuration_set: str = FIXTURE_CONFIGURATION_SET,
) -> dict[str, Any]:
    """A recorded EventBridge SES event (``tests/fixtures/ses_events/<name>.json``).

    The message's send token, id, recipient and configuration set are replaced by
    the given ones, everywhere they occur (tags, headers, recipient lists).
    """
    text = (SES_EVENTS / f"{name}.json").read_text()
    text = text.replace(FIXTURE_MESSAGE_ID, message_id).replace(FIXTURE_ADDRESS, address)
    text = text.replace(f'"{FIXTURE_CONFIGURATION_SET}"', json.dumps(configuration_set))
    text = text.replace(
        f"configuration-set/{FIXTURE_CONFIGURATION_SET}", f"configuration-set/{configuration_set}"
    )
    event: dict[str, Any] = json.loads(text)
    tags = event["detail"]["mail"]["tags"]
    if token is None:
        del tags["send_token"]
    else:
        tags["send_token"] = [token]
    return event


class SuppressionList:
    """SES's account-level suppression list, answered at botocore's boundary.

    moto 5.2.5 implements neither PutSuppressedDestination nor GetSuppressedDestination,
    so these two operations are answered here, for every client (the handlers are in
    botocore's built-in handlers, which every new session copies), before moto sees
    them. Everything else still goes to moto. ``reset`` empties it (per test).
    """

    def __init__(self) -> None:
        self.addresses: dict[str, str] = {}
        self.puts: list[tuple[str, str]] = []

    def reset(self) -> None:
        """Forget every suppressed address and recorded call."""
        self.addresses.clear()
        self.puts.clear()

    def put(self, params: dict[str, Any], **_: object) -> Answer:
        """PutSuppressedDestination: remember the address (case-insensitively) and reason."""
        body = json.loads(params["body"])
        self.puts.append((body["EmailAddress"], body["Reason"]))
        self.addresses[body["EmailAddress"].lower()] = body["Reason"]
        # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
        response = AWSResponse(params["url"], 200, {}, None)  # type: ignore[arg-type]
        return response, {"ResponseMetadata": {"HTTPStatusCode": 200}}

    def get(self, params: dict[str, Any], **_: object) -> Answer:
        """GetSuppressedDestination: the address's entry, or NotFoundException."""
        address = unquote(params["url_path"].rsplit("/", 1)[1])
        reason = self.addresses.get(address.lower())
        if reason is None:
            return ses_error("NotFoundException", 404, f"{address} is not on the suppression list")
        # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
        response = AWSResponse(params["url"], 200, {}, None)  # type: ignore[arg-type]
        return response, {
            "SuppressedDestination": {
                "EmailAddress": address,
                "Reason": reason,
                "LastUpdateTime": datetime.now(UTC),
            },
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }


SUPPRESSION_LIST = SuppressionList()
BUILTIN_HANDLERS.append(("before-call.sesv2.PutSuppressedDestination", SUPPRESSION_LIST.put))
BUILTIN_HANDLERS.append(("before-call.sesv2.GetSuppressedDestination", SUPPRESSION_LIST.get))


class SesAccount:
    """SESv2 ``GetAccount``, answered at botocore's boundary (moto 5.2.5 has none).

    Like :class:`SuppressionList`, its handler is one of botocore's built-in handlers,
    so every client answers from it, spawned test processes included. The defaults
    are a generous production account, so a test paces and counts nothing unless it
    sets a quota; ``error`` makes GetAccount fail. ``reset`` restores them (per test).
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """A production account allowed 1,000 emails a second and 1,000,000 a day."""
        self.max_send_rate = 1000.0
        self.max_24_hour_send = 1_000_000.0
        self.sent_last_24_hours = 0.0
        self.sending_enabled = True
        self.error: Answer | None = None
        self.calls = 0

    def get(self, params: dict[str, Any], **_: object) -> Answer:
        """GetAccount: the configured quota, or the configured error."""
        self.calls += 1
        if self.error is not None:
            return self.error
        # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
        response = AWSResponse(params["url"], 200, {}, None)  # type: ignore[arg-type]
        return response, {
            "SendQuota": {
                "Max24HourSend": self.max_24_hour_send,
                "MaxSendRate": self.max_send_rate,
                "SentLast24Hours": self.sent_last_24_hours,
            },
            "SendingEnabled": self.sending_enabled,
            "ProductionAccessEnabled": True,
            "ResponseMetadata": {"HTTPStatusCode": 200},
        }


SES_ACCOUNT = SesAccount()


class FakeClock:
    """A monotonic clock that moves only when told, or when a caller sleeps on it."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def monotonic(self) -> float:
        """The fake time."""
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the sleep and move the clock on by it, at once."""
        self.slept.append(seconds)
        self.now += seconds

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass without anyone sleeping."""
        self.now += seconds


BUILTIN_HANDLERS.append(("before-call.sesv2.GetAccount", SES_ACCOUNT.get))


def ledger_key(kind: str, *parts: object) -> str:
    """A notice's ledger key, built as its check builds it (through the registry)."""
    from chalicelib import registry

    return registry.kind(kind).key(*parts)


# The empty tables moto holds after provisioning, per set of table names, in this process.
_PROVISIONED: dict[tuple[object, ...], dict[str, Table]] = {}


def provisioned(settings: Settings) -> None:
    """The settings' tables with their indexes, empty, as ``provision`` creates them.

    On DynamoDB Local every test provisions for real. On moto the first test of a
    process does, and later tests get copies of the empty tables it left in moto's
    backend: 18 requests a test saved, a fifth of the suite's time. ``provision``
    itself is tested on its own (test_provisioning.py, test_cli.py).
    """
    if settings.dynamodb_endpoint is not None:
        provision(settings)
        return
    names = dataclasses.astuple(settings.tables)
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID][settings.region]
    if names not in _PROVISIONED:
        provision(settings)
        _PROVISIONED[names] = {name: copy.deepcopy(backend.tables[name]) for name in names}
    bind(settings)
    backend.tables.update(copy.deepcopy(_PROVISIONED[names]))


def ledger_notices() -> list[Notification]:
    """Every notice in the ledger (read consistently), without the checks' own records
    kept in the same table: the schedule's and the sweeps' (chalicelib.schedule) and the
    note check's settled notes."""
    from chalicelib import schedule
    from chalicelib.checks.note_reminders import SETTLED_PREFIX

    records = (schedule.PREFIX, schedule.SWEEP_PREFIX, SETTLED_PREFIX)
    return [e for e in Notification.scan(consistent_read=True) if not e.id.startswith(records)]
