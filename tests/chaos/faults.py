"""Faults injected at the botocore boundary of the clients the code under test uses.

Everything here runs inside a worker process (a simulated Lambda container). The
injector registers botocore event handlers on the SESv2 client of the mailer and on
PynamoDB's DynamoDB clients; it never patches a project function:

- ``before-call``: an error answer (SES throttling and rejections, DynamoDB throttling),
  as if botocore had given up retrying;
- ``before-send``: the injector sends the request itself, so it can drop the answer of
  a request that was applied (``ReadTimeoutError``; botocore may then retry it) or kill
  the invocation (:class:`SimulatedCrash`) right after a claim, before or after SES
  accepted a message, or right after the ledger recorded it.
"""

from __future__ import annotations

import base64
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from email.utils import getaddresses
from typing import Any

from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.client import BaseClient
from botocore.exceptions import ReadTimeoutError
from botocore.httpsession import URLLib3Session
from mypy_boto3_sesv2 import SESV2Client

from tests.chaos.oracle import identities, parse

# Every injected error message carries this, so the soak can tell a failure recorded
# for an injected rejection from any other.
MARKER = "chaos: injected"
LAMBDA_TIMEOUT_MS = 300_000


class SimulatedCrash(BaseException):
    """The Lambda container dies here (timeout, out of memory): nothing after it runs."""


@dataclass(frozen=True)
class FaultRates:
    """Probability of each fault per botocore call (per invocation for the time budget).

    The time budget fault makes the Lambda context report 5 s left after the run
    has looked at it 0-3 times; it counts as injected once the run sees it.
    """

    ses_throttling: float = 0.03
    ses_too_many_requests: float = 0.03
    ses_message_rejected: float = 0.01
    ses_account_paused: float = 0.01
    ses_internal_failure: float = 0.02
    ses_lost_response: float = 0.05
    ddb_throttling: float = 0.01
    ddb_lost_response: float = 0.03
    ddb_lost_read: float = 0.03
    crash_after_claim: float = 0.015
    crash_before_send: float = 0.015
    crash_after_send: float = 0.015
    crash_after_record: float = 0.015
    crash_in_ses_handler: float = 0.015
    short_time_budget: float = 0.03

    def as_dict(self) -> dict[str, float]:
        """Plain data, to send to a worker."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


LABELS = {
    "ses_throttling": "SES Throttling",
    "ses_too_many_requests": "SES TooManyRequestsException",
    "ses_message_rejected": "SES MessageRejected",
    "ses_account_paused": "SES AccountSendingPausedException",
    "ses_internal_failure": "SES 500 InternalFailure (not accepted, ambiguous)",
    "ses_lost_response": "SES response lost after acceptance",
    "ddb_throttling": "DynamoDB throttling",
    "ddb_lost_response": "DynamoDB response lost after the write",
    "ddb_lost_read": "DynamoDB read response lost",
    "crash_after_claim": "crash after claim",
    "crash_before_send": "crash between claim and send",
    "crash_after_send": "crash between send and record",
    "crash_after_record": "crash after record",
    "crash_in_ses_handler": "record_ses_events crashed after its ledger write",
    "short_time_budget": "Lambda time nearly used up",
}

_SES_ERRORS = (
    ("ses_throttling", "Throttling", 400),
    ("ses_too_many_requests", "TooManyRequestsException", 429),
    ("ses_message_rejected", "MessageRejected", 400),
    ("ses_account_paused", "AccountSendingPausedException", 400),
    # A 5xx: SES did not accept it, but the sender cannot know that (ambiguous).
    ("ses_internal_failure", "InternalFailure", 500),
)


def error_answer(code: str, status: int) -> tuple[AWSResponse, dict[str, Any]]:
    """A ``before-call`` answer that makes botocore raise ``ClientError(code)``."""
    # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
    response = AWSResponse("https://chaos.invalid", status, {}, None)  # type: ignore[arg-type]
    return response, {
        "Error": {"Code": code, "Message": f"{MARKER} {code}"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }


def account_answer(**_: object) -> tuple[AWSResponse, dict[str, Any]]:
    """SESv2 GetAccount (moto's server has none): a production account, never the limit.

    The soak is about exactly-once under faults; throttling is injected on its own.
    """
    # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
    response = AWSResponse("https://chaos.invalid", 200, {}, None)  # type: ignore[arg-type]
    quota = {"Max24HourSend": 1_000_000.0, "MaxSendRate": 1000.0, "SentLast24Hours": 0.0}
    return response, {
        "SendQuota": quota,
        "SendingEnabled": True,
        "ResponseMetadata": {"HTTPStatusCode": 200},
    }


def _json_body(request: AWSPreparedRequest) -> dict[str, Any]:
    body = request.body
    if isinstance(body, bytes | bytearray):
        body = body.decode()
    return json.loads(body) if isinstance(body, str) and body else {}


class _NoSleep:
    """botocore's retry back-off without real sleeping: time in the soak is simulated."""

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        del seconds


def no_retry_sleeps() -> None:
    """Make botocore's retries immediate (its back-off is real ``time.sleep``)."""
    import botocore.endpoint

    setattr(botocore.endpoint, "time", _NoSleep())  # noqa: B010 -- a module attribute


def _register(client: BaseClient, event: str, handler: Callable[..., object]) -> None:
    # botocore-stubs type every handler as returning None; a before-call or before-send
    # handler's answer replaces the call.
    client.meta.events.register(event, handler)  # type: ignore[arg-type]


class Injector:
    """Decides and injects faults for one job at a time; records what SES accepted."""

    def __init__(self, notifications_table: str) -> None:
        self.table = notifications_table
        self.http = URLLib3Session(timeout=30)
        self.rates: dict[str, float] | None = None
        self.rng = random.Random(0)
        self.injected: Counter[str] = Counter()
        self.accepted: list[dict[str, Any]] = []
        self.rejected: list[dict[str, Any]] = []
        self.now = datetime.min.replace(tzinfo=UTC)
        self._instrumented: set[int] = set()
        self._budget_calls = -1
        self.kind = "invoke"

    # -- per job -------------------------------------------------------------------------
    def begin(
        self, rates: dict[str, float] | None, seed: int, now: datetime, kind: str = "invoke"
    ) -> None:
        """Arm the injector for one job of ``kind`` (``rates`` None: no faults)."""
        self.rates, self.rng, self.now, self.kind = rates, random.Random(seed), now, kind
        self.injected, self.accepted, self.rejected = Counter(), [], []
        short = self.rates is not None and self.rng.random() < self.rates.get(
            "short_time_budget", 0.0
        )
        self._budget_calls = self.rng.randint(0, 3) if short else -1

    def end(self) -> tuple[dict[str, int], list[dict[str, Any]], list[dict[str, Any]]]:
        """What this job injected, what SES accepted and what it rejected (injected)."""
        result = dict(self.injected), self.accepted, self.rejected
        self.rates = None
        return result

    def remaining_ms(self) -> Callable[[], int]:
        """The Lambda context's clock: plenty of time, or nearly none after a few looks."""
        started = time.monotonic()
        calls = 0

        def remaining() -> int:
            nonlocal calls
            calls += 1
            if 0 <= self._budget_calls < calls:
                if self._budget_calls + 1 == calls:
                    self.injected[LABELS["short_time_budget"]] += 1
                return 5_000
            return LAMBDA_TIMEOUT_MS - int((time.monotonic() - started) * 1000)

        return remaining

    def _draw(self, fault: str) -> bool:
        if self.rates is None or self.rng.random() >= self.rates.get(fault, 0.0):
            return False
        self.injected[LABELS[fault]] += 1
        return True

    # -- wiring --------------------------------------------------------------------------
    def instrument_ses(self, client: SESV2Client) -> None:
        """Register the SES faults on the mailer's SESv2 client (once per client)."""
        if id(client) in self._instrumented:
            return
        self._instrumented.add(id(client))
        _register(client, "before-call.sesv2.SendEmail", self._ses_error)
        _register(client, "before-send.sesv2.SendEmail", self._ses_transport)
        _register(client, "before-call.sesv2.GetAccount", account_answer)

    def instrument_dynamodb(self, client: BaseClient) -> None:
        """Register the DynamoDB faults on one of PynamoDB's clients (once per client)."""
        if id(client) in self._instrumented:
            return
        self._instrumented.add(id(client))
        _register(client, "before-call.dynamodb", self._ddb_throttle)
        _register(client, "before-send.dynamodb.UpdateItem", self._ddb_transport)
        for read in ("Query", "BatchGetItem", "GetItem"):
            _register(client, f"before-send.dynamodb.{read}", self._ddb_read)

    # -- SES -----------------------------------------------------------------------------
    def _ses_error(
        self, params: dict[str, Any] | None = None, **_: Any
    ) -> tuple[AWSResponse, dict[str, Any]] | None:
        for fault, code, status in _SES_ERRORS:
            if self._draw(fault):
                if fault == "ses_message_rejected":
                    self._journal_rejection(params or {})
                return error_answer(code, status)
        return None

    def _journal_rejection(self, params: dict[str, Any]) -> None:
        """Which notices a rejected message carried, and the send token of its claim."""
        body = params.get("body")
        request = json.loads(body) if isinstance(body, str | bytes | bytearray) and body else {}
        raw = base64.b64decode(request["Content"]["Raw"]["Data"])
        tags = {t["Name"]: t["Value"] for t in request.get("EmailTags") or []}
        self.rejected.append(
            {"identities": identities(parse(raw)), "send_token": tags.get("send_token")}
        )

    def _ses_transport(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse:
        if self._draw("crash_before_send"):
            raise SimulatedCrash("crash between claim and send")
        response = self.http.send(request)
        if response.status_code == 200:
            self._journal(request, response)
            if self._draw("ses_lost_response"):
                raise ReadTimeoutError(endpoint_url=request.url)
            if self._draw("crash_after_send"):
                raise SimulatedCrash("crash between send and record")
        return response

    def _journal(self, request: AWSPreparedRequest, response: AWSResponse) -> None:
        body = _json_body(request)
        raw = base64.b64decode(body["Content"]["Raw"]["Data"])
        tags: dict[str, list[str]] = {}
        for tag in body.get("EmailTags") or []:
            tags.setdefault(tag["Name"], []).append(tag["Value"])
        if body.get("ConfigurationSetName"):
            tags["ses:configuration-set"] = [body["ConfigurationSetName"]]
        self.accepted.append(
            {
                "message_id": json.loads(response.content)["MessageId"],
                "source": body.get("FromEmailAddress", ""),
                "destination": [a for _, a in getaddresses(parse(raw).get_all("To", []))],
                "tags": tags,
                "accepted_at": self.now.isoformat(),
            }
        )

    # -- DynamoDB ------------------------------------------------------------------------
    def _ddb_throttle(self, **_: Any) -> tuple[AWSResponse, dict[str, Any]] | None:
        if self._draw("ddb_throttling"):
            code = self.rng.choice(
                ["ProvisionedThroughputExceededException", "ThrottlingException"]
            )
            return error_answer(code, 400)
        return None

    def _ddb_read(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if not self._draw("ddb_lost_read"):
            return None
        self.http.send(request)  # answered, but the answer never arrives
        raise ReadTimeoutError(endpoint_url=request.url)

    def _ddb_transport(self, request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if self.rates is None:
            return None
        body = _json_body(request)
        ledger = body.get("TableName") == self.table
        if self.kind == "ses_events":
            crash = ledger and self._draw("crash_in_ses_handler")
            if not crash and not self._draw("ddb_lost_response"):
                return None
            self.http.send(request)
            if crash:
                raise SimulatedCrash("record_ses_events crashed after its ledger write")
            raise ReadTimeoutError(endpoint_url=request.url)
        statuses = {v.get("S") for v in (body.get("ExpressionAttributeValues") or {}).values()}
        crash_claim = ledger and "claimed" in statuses and self._draw("crash_after_claim")
        crash_record = (
            not crash_claim and ledger and "sent" in statuses and self._draw("crash_after_record")
        )
        lost = not (crash_claim or crash_record) and self._draw("ddb_lost_response")
        if not (crash_claim or crash_record or lost):
            return None
        response = self.http.send(request)
        if crash_claim:
            raise SimulatedCrash("crash after claim")
        if crash_record:
            raise SimulatedCrash("crash after record")
        del response  # applied; its answer is lost
        raise ReadTimeoutError(endpoint_url=request.url)
