"""Sending at the SES quota, measured: ``python -m ops.bench_send``.

For each simulated account (maximum send rates 14/s, 50/s and 200/s) it runs the note
check over enough due notices for about ten seconds of sending, with the ledger and
the CRM on DynamoDB Local and SES simulated in-process by botocore hooks on the very
client the run sends through:

- ``GetAccount`` answers the account's quota;
- every ``SendEmail`` takes 50 ms after SES decides on its arrival, and is refused
  with ``Throttling`` / "Maximum sending rate exceeded" when accepting it would put
  more than the maximum rate into any one-second window; accepted ones are answered
  with a message id.

Both answers replace the call in botocore, so no request leaves the process and no
mock of AWS runs beside the code measured (moto's request matching would cost the
run CPU that Lambda never spends).

So "0 throttles" is counted by the simulated SES, not assumed, and the run's own
SES client never retries (a throttled send would show in its summary too).

The achieved rate is that of the sending phase: accepted emails after the first over
the time from the first acceptance to the last. The whole run (its reads included)
is reported next to it. :func:`bench_send` takes the endpoint of a DynamoDB Local the
caller started; ``main`` starts one itself and prints a table, then
``send <s.ss> x quota, <t> throttles`` (the worst ratio, the total throttles).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from botocore.awsrequest import AWSResponse

from chalicelib import models
from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.mailer import Mailer, ses_client
from chalicelib.observability import logger
from chalicelib.runner import run_check
from ops.ddblocal import running
from ops.demo import LENDER_ENVIRONMENT
from ops.provisioning import provision, table_environment
from ops.stages import REGION

QUOTAS = (14, 50, 200)
LATENCY_SECONDS = 0.05
SENDING_SECONDS = 10.0
# A run before the measured ones, discarded: it warms DynamoDB Local up.
WARM_UP_QUOTA = 50
WARM_UP_SECONDS = 2.0
SENDER = "reminders@bench.example.com.au"
DAY = "2026-11-23"
AT = datetime(2026, 11, 23, 12, 0, tzinfo=ZoneInfo("Australia/Sydney"))
# What a botocore ``before-call`` handler answers: an HTTP response and its parsed body.
Answer = tuple[AWSResponse, dict[str, object]]


@dataclass(frozen=True)
class SendResult:
    """One simulated account's run: how fast it sent, against its maximum rate."""

    quota: float  # the account's maximum send rate, emails a second
    notices: int  # notices due (one email each)
    emails: int  # emails SES accepted
    throttles: int  # sends the simulated SES refused for the rate
    sending_seconds: float  # first acceptance to the last
    run_seconds: float  # the whole run, its reads included
    cpu_seconds: float  # this process's CPU over the run (Python holds one core at most)
    dynamodb_requests: int  # the run's DynamoDB requests
    dynamodb_seconds: float  # their summed latency (they overlap across workers)

    @property
    def rate(self) -> float:
        """Emails a second over the sending phase."""
        if self.emails < 2 or self.sending_seconds <= 0:
            return 0.0
        return (self.emails - 1) / self.sending_seconds

    @property
    def ratio(self) -> float:
        """The achieved rate over the account's maximum rate."""
        return self.rate / self.quota

    @property
    def cpu_ms_per_email(self) -> float:
        """Milliseconds of this process's CPU per email: the GIL's ceiling is 1000 / this."""
        return 1000 * self.cpu_seconds / self.emails if self.emails else 0.0

    @property
    def dynamodb_ms(self) -> float:
        """The mean latency of one DynamoDB request."""
        return (
            1000 * self.dynamodb_seconds / self.dynamodb_requests if self.dynamodb_requests else 0.0
        )

    @property
    def run_rate(self) -> float:
        """Emails a second over the whole run."""
        return self.emails / self.run_seconds if self.run_seconds > 0 else 0.0


class SimulatedSes:
    """SES at botocore's boundary: its quota, its latency and its rate limit.

    Thread-safe: the run's workers send through it at once.
    """

    def __init__(self, max_send_rate: float, latency: float = LATENCY_SECONDS) -> None:
        self.max_send_rate = max_send_rate
        self.latency = latency
        self.accepted: list[float] = []
        self.throttles = 0
        self._window: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def get_account(self, params: dict[str, Any], **_: object) -> Answer:
        """GetAccount: the account's quota, with nothing sent yet today."""
        return _answer(
            params,
            200,
            {
                "SendQuota": {
                    "Max24HourSend": 1_000_000.0,
                    "MaxSendRate": self.max_send_rate,
                    "SentLast24Hours": 0.0,
                },
                "SendingEnabled": True,
                "ProductionAccessEnabled": True,
            },
        )

    def send_email(self, params: dict[str, Any], **_: object) -> Answer | None:
        """SendEmail: accepted unless the last second is full.

        SES decides when the request arrives; the latency is its processing and the
        answer's way back.
        """
        with self._lock:
            now = time.monotonic()
            while self._window and self._window[0] <= now - 1.0:
                self._window.popleft()
            refused = len(self._window) >= self.max_send_rate
            if refused:
                self.throttles += 1
            else:
                self._window.append(now)
                self.accepted.append(now)
        time.sleep(self.latency)
        if refused:
            error = {"Code": "Throttling", "Message": "Maximum sending rate exceeded."}
            return _answer(params, 400, {"Error": error})
        return _answer(params, 200, {"MessageId": f"bench-{uuid.uuid4().hex}"})


class DynamoDBTimer:
    """The count and summed latency of a client's requests, from any thread."""

    def __init__(self) -> None:
        self.requests = 0
        self.seconds = 0.0
        self._started = threading.local()
        self._lock = threading.Lock()

    def before(self, **_: object) -> None:
        self._started.at = time.perf_counter()

    def after(self, **_: object) -> None:
        elapsed = time.perf_counter() - self._started.at
        with self._lock:
            self.requests += 1
            self.seconds += elapsed

    @contextmanager
    def timing(self, events: Any) -> Iterator[None]:
        events.register("before-call.dynamodb", self.before)
        events.register("after-call.dynamodb", self.after)
        try:
            yield
        finally:
            events.unregister("before-call.dynamodb", self.before)
            events.unregister("after-call.dynamodb", self.after)


def _answer(params: dict[str, Any], status: int, body: dict[str, object]) -> Answer:
    # botocore-stubs want HTTPHeaders; botocore takes any mapping (here, no headers).
    response = AWSResponse(params["url"], status, {}, None)  # type: ignore[arg-type]
    return response, {**body, "ResponseMetadata": {"HTTPStatusCode": status}}


def _settings(endpoint: str, prefix: str, concurrency: int | None) -> Settings:
    env = table_environment(prefix)
    env.update(
        {
            "SENDER_EMAIL": SENDER,
            **LENDER_ENVIRONMENT,
            "AWS_REGION": REGION,
            "DYNAMODB_ENDPOINT_URL": endpoint,
            "NOTE_REMINDERS_START": "00:00",
            "BUSINESS_DAY_END": "23:59",
        }
    )
    if concurrency is not None:
        env["SEND_CONCURRENCY"] = str(concurrency)
    return Settings.from_env(env)


def _seed(settings: Settings, notes: int) -> None:
    """A BDM, a note author, one application and ``notes`` notes due today (2 notices each)."""
    provision(settings, poll_seconds=0.1)
    models.Staff(id="bdm-1", name="Brooke Davis", email="brooke@bench.example.com.au").save()
    models.Staff(id="staff-2", name="Sam Author", email="sam@bench.example.com.au").save()
    models.Application(
        id="app-1",
        reference_number="APP-1001",
        stage="valuation_ordered",
        stage_last_updated="2026-11-20T10:00:00+11:00",
        loan_amount=750000,
        broker_name="Harbour Finance Brokers",
        bd_id="bdm-1",
        borrower_ids=[],
    ).save()
    with models.Note.batch_write() as batch:
        for n in range(notes):
            batch.save(
                models.Note(
                    id=f"note-{n}",
                    title=f"Note {n}",
                    content="Chase the valuation report.",
                    remind_date=DAY,
                    application_id="app-1",
                    created_by="staff-2",
                    created_at="2026-11-01T09:00:00+11:00",
                    pending_check=models.NOTES_PENDING,
                )
            )


@contextmanager
def _simulated(mailer: Mailer, ses: SimulatedSes) -> Iterator[None]:
    events = mailer.client.meta.events
    # botocore-stubs type every handler as returning None; a before-call handler's answer
    # replaces the call.
    events.register("before-call.sesv2.GetAccount", ses.get_account)  # type: ignore[arg-type]
    events.register("before-call.sesv2.SendEmail", ses.send_email)  # type: ignore[arg-type]
    try:
        yield
    finally:
        events.unregister("before-call.sesv2.GetAccount", ses.get_account)  # type: ignore[arg-type]
        events.unregister("before-call.sesv2.SendEmail", ses.send_email)  # type: ignore[arg-type]


def measure(
    endpoint: str, quota: float, seconds: float = SENDING_SECONDS, concurrency: int | None = None
) -> SendResult:
    """Run the note check at one simulated maximum rate, on tables of its own.

    ``concurrency`` is ``SEND_CONCURRENCY`` (the setting's default when None).
    """
    notes = max(2, round(quota * seconds / 2))
    settings = _settings(endpoint, f"bench-send-{uuid.uuid4().hex[:8]}", concurrency)
    _seed(settings, notes)
    ses = SimulatedSes(quota)
    mailer = Mailer(
        SENDER,
        REGION,
        client=ses_client(REGION, settings.send.send_concurrency),
        connections=settings.send.send_concurrency,
    )
    timer = DynamoDBTimer()
    dynamodb = models.Notification._get_connection().connection.client
    with _simulated(mailer, ses), timer.timing(dynamodb.meta.events):
        started, cpu = time.perf_counter(), time.process_time()
        try:
            summary = run_check(
                "note_reminders",
                at=AT,
                now=AT,
                settings=settings,
                mailer=mailer,
                emit_metrics=False,
            )
        except DeliveryIncomplete as incomplete:  # throttled sends: counted, not hidden
            summary = incomplete.summary
        run_seconds = time.perf_counter() - started
        cpu_seconds = time.process_time() - cpu
    accepted = ses.accepted
    return SendResult(
        quota=quota,
        notices=summary.notices_due,
        emails=len(accepted),
        throttles=max(ses.throttles, summary.throttled),
        sending_seconds=accepted[-1] - accepted[0] if accepted else 0.0,
        run_seconds=run_seconds,
        cpu_seconds=cpu_seconds,
        dynamodb_requests=timer.requests,
        dynamodb_seconds=timer.seconds,
    )


@contextmanager
def _credentials() -> Iterator[None]:
    """Fake credentials for the block: botocore signs every request, DynamoDB Local accepts any."""
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "bench"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def bench_send(
    endpoint: str,
    quotas: Sequence[float] = QUOTAS,
    seconds: float = SENDING_SECONDS,
    concurrency: int | None = None,
) -> list[SendResult]:
    """Measure sending at each simulated quota against the DynamoDB Local at ``endpoint``.

    SES is :class:`SimulatedSes` (in this process); DynamoDB goes to
    ``endpoint``. Each quota gets tables of its own, after a discarded warm-up run.
    The runs' logs are quietened.
    """
    level = logger.log_level
    logger.setLevel(logging.ERROR)
    try:
        with _credentials():
            # DynamoDB Local's JVM answers its first few hundred requests slowly.
            measure(endpoint, WARM_UP_QUOTA, WARM_UP_SECONDS, concurrency)
            return [measure(endpoint, quota, seconds, concurrency) for quota in quotas]
    finally:
        logger.setLevel(level)


def table(results: Sequence[SendResult]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| max rate | notices | emails | sending | achieved | x quota | whole run | throttles "
        "| CPU / email | DynamoDB requests, mean latency |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r.quota:.0f}/s | {r.notices} | {r.emails} | {r.sending_seconds:.2f} s "
        f"| {r.rate:.1f}/s | {r.ratio:.2f} | {r.run_seconds:.2f} s ({r.run_rate:.1f}/s) "
        f"| {r.throttles} | {r.cpu_ms_per_email:.1f} ms "
        f"| {r.dynamodb_requests}, {r.dynamodb_ms:.1f} ms |"
        for r in results
    ]
    return "\n".join(lines)


def summary_line(results: Sequence[SendResult]) -> str:
    """``send <s.ss> x quota, <t> throttles``: the worst ratio and every throttle."""
    worst = min(r.ratio for r in results)
    return f"send {worst:.2f} x quota, {sum(r.throttles for r in results)} throttles"


def main(argv: Sequence[str] | None = None) -> None:
    """Start DynamoDB Local, measure every quota, print the table and the summary line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=SENDING_SECONDS)
    parser.add_argument("--quota", type=float, action="append", help="repeatable")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as log_dir, running(Path(log_dir)) as server:
        results = bench_send(server.endpoint, args.quota or QUOTAS, args.seconds)
    print(table(results))
    if args.json:
        rows = [
            {**r.__dict__, "rate": r.rate, "ratio": r.ratio, "run_rate": r.run_rate}
            for r in results
        ]
        args.json.write_text(json.dumps(rows, indent=2))
    print(summary_line(results))


if __name__ == "__main__":
    main()
