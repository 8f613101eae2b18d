"""The fan-out's per-notice costs, measured, and the wall time they project for a big day.

``python -m ops.bench_fanout`` starts DynamoDB Local (the test tier's launcher; needs
Java 17+ and ``npm ci``), measures, prints the figures and the projection, and stops
it. :func:`measure` is what ``make bench`` calls with an endpoint it started itself.

- **producer**: what a run pays per notice it hands on: rendering its email and its
  share of ``SendMessageBatch`` (SQS on moto, in process, so no network round trip).
- **consumer**: what ``deliver_fanout`` pays per notice: reading the ledger, the
  conditional claim, sending (SES on moto, with ``ses_latency`` seconds of simulated
  latency per message, as issue 9's send figures use) and recording ``sent``, with the
  ledger on DynamoDB Local.

The projection for ``due`` notices at a ``quota`` of messages per second: the
consumers, ``concurrency`` of them each sending one notice at a time and at most
``FANOUT_CONSUMER_RATE`` a second, deliver
``min(quota, concurrency * min(1 / consumer cost, consumer rate))`` notices a second;
the producer renders and enqueues at ``1 / producer cost`` a second at the same time,
so the wall time is the slower of the two pipelines (plus the first message's trip,
left out).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from chalicelib import fanout, models
from chalicelib.checks.note_reminders import NOTE_REMINDER
from chalicelib.config import Lender, Settings
from chalicelib.delivery import Notice
from chalicelib.formatting import au_date
from chalicelib.mailer import Email, Mailer, Recipient, render
from chalicelib.observability import logger
from chalicelib.run import Part, Run, RunSummary
from ops import ddblocal as server
from ops.demo import LENDER_ENVIRONMENT
from ops.provisioning import provision, table_environment
from ops.stages import REGION

SENDER = "reminders-bench@example.com.au"
BUSINESS_DATE = date(2026, 11, 23)
NOW = datetime(2026, 11, 23, 1, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Projection:
    """Measured per-notice costs and the wall time they project for ``due`` notices."""

    measured_notices: int
    producer_ms: float  # per notice: render + enqueue
    consumer_ms: float  # per notice: ledger read + claim + send + record
    due: int
    quota: float  # SES messages per second
    concurrency: int  # consumers at most (the event source's MaximumConcurrency)
    consumer_rate: float  # notices per second all consumers deliver
    producer_seconds: float  # rendering and enqueuing ``due`` notices
    wall_seconds: float
    bound: str  # what limits the wall time: "quota", "concurrency" or "producer"

    def lines(self) -> list[str]:
        """The figures, one per line, as ``main`` prints them."""
        return [
            f"measured over {self.measured_notices} notices:",
            f"  producer (render + enqueue)           {self.producer_ms:7.2f} ms/notice",
            f"  consumer (read + claim + send + record) {self.consumer_ms:5.2f} ms/notice",
            f"projection for {self.due:,} due notices at {self.quota:g}/s, "
            f"{self.concurrency} consumers:",
            f"  consumers deliver {self.consumer_rate:,.1f} notices/s (bound by the {self.bound})",
            f"  producer renders and enqueues them in {self.producer_seconds:,.0f} s",
            f"fanout: {self.due:,} notices in {self.wall_seconds:,.0f} s "
            f"({self.wall_seconds / 60:.1f} min) at {self.quota:g}/s",
        ]


def project(
    producer_ms: float,
    consumer_ms: float,
    *,
    measured: int,
    due: int = 100_000,
    quota: float = 200.0,
    concurrency: int = fanout.MAX_CONCURRENCY,
    pace: float | None = fanout.CONSUMER_RATE,
) -> Projection:
    """The wall time for ``due`` notices from the measured per-notice costs.

    Each consumer sends one notice at a time, and at most ``pace`` a second (its
    share of the quota, ``FANOUT_CONSUMER_RATE``; None: unpaced).
    """
    per_consumer = 1000 / consumer_ms if pace is None else min(1000 / consumer_ms, pace)
    by_concurrency = concurrency * per_consumer
    consumer_rate = min(quota, by_concurrency)
    producer_seconds = due * producer_ms / 1000
    delivering = due / consumer_rate
    if producer_seconds > delivering:
        bound = "producer"
    else:
        bound = "quota" if quota <= by_concurrency else "concurrency"
    return Projection(
        measured_notices=measured,
        producer_ms=producer_ms,
        consumer_ms=consumer_ms,
        due=due,
        quota=quota,
        concurrency=concurrency,
        consumer_rate=consumer_rate,
        producer_seconds=producer_seconds,
        wall_seconds=max(producer_seconds, delivering),
        bound=bound,
    )


LENDER = Lender.from_env(LENDER_ENVIRONMENT)


def _notices(count: int) -> list[Notice[None]]:
    """``count`` note reminders to distinct authors, rendered by the real template."""
    made: list[Notice[None]] = []
    for n in range(count):
        to = Recipient(id=f"staff-{n}", name=f"Author {n}", email=f"author{n}@example.com.au")
        key = NOTE_REMINDER.key(f"note-{n}", BUSINESS_DATE.isoformat(), to.id)

        def compose(parts: object, to: Recipient = to, n: int = n) -> Email:
            return render(
                NOTE_REMINDER.template,
                to,
                f"Note Reminder: Call the valuer ({n})",
                {
                    "title": "Call the valuer",
                    "content": "Chase the valuation report for the Parramatta property.",
                    "reference": f"APP-{1000 + n}",
                    "remind_date": au_date(BUSINESS_DATE),
                    "role": "author",
                },
                lender=LENDER,
            )

        made.append(
            Notice(
                kind=NOTE_REMINDER.name,
                recipient=to,
                parts=[Part(key=key, item_id=f"note-{n}", data=None)],
                compose=compose,
            )
        )
    return made


def _environment(endpoint_url: str) -> dict[str, str]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    return {
        **table_environment(prefix),
        "SENDER_EMAIL": SENDER,
        **LENDER_ENVIRONMENT,
        "AWS_REGION": REGION,
        "DYNAMODB_ENDPOINT_URL": endpoint_url,
    }


@contextmanager
def _latency(client: Any, seconds: float) -> Iterator[None]:
    """Every SES send takes ``seconds`` longer, as over the network; ``GetAccount`` (which
    moto lacks) answers limits no consumer here reaches: the cost measured is unpaced, and
    the quota is applied by the projection."""

    def slow(**_: object) -> None:
        time.sleep(seconds)

    def account(params: dict[str, Any], **_: object) -> tuple[AWSResponse, dict[str, Any]]:
        send_quota = {"MaxSendRate": 1e4, "Max24HourSend": 1e9, "SentLast24Hours": 0.0}
        response = AWSResponse(params["url"], 200, {}, None)  # type: ignore[arg-type]
        return response, {"SendQuota": send_quota, "SendingEnabled": True}

    client.meta.events.register("before-send.sesv2.SendEmail", slow)
    client.meta.events.register("before-call.sesv2.GetAccount", account)
    try:
        yield
    finally:
        client.meta.events.unregister("before-send.sesv2.SendEmail", slow)
        client.meta.events.unregister("before-call.sesv2.GetAccount", account)


def measure(
    endpoint_url: str,
    *,
    notices: int = 300,
    due: int = 100_000,
    quota: float = 200.0,
    concurrency: int = fanout.MAX_CONCURRENCY,
    ses_latency: float = 0.05,
) -> Projection:
    """Measure both per-notice costs (the ledger on DynamoDB Local at ``endpoint_url``)."""
    # Kept whole: both costs must be measured on the same tables, seeded once, inside one
    # mock (SES and SQS in moto, the ledger on DynamoDB Local).
    with mock_aws():
        settings = Settings.from_env(_environment(endpoint_url))
        provision(settings, poll_seconds=0.2)
        models.bind(settings)
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        url = boto3.client("sqs", region_name=REGION).create_queue(QueueName="bench-fanout")[
            "QueueUrl"
        ]
        mailer = Mailer(SENDER, REGION, client=boto3.client("sesv2", region_name=REGION))
        run_id = uuid.uuid4().hex
        run = Run(
            settings=settings,
            mailer=mailer,
            run_id=run_id,
            now=NOW,
            today=BUSINESS_DATE,
            summary=RunSummary(note_check(), BUSINESS_DATE.isoformat(), run_id),
        )
        fan_out = fanout.FanOut(fanout.FanOutSettings(queue_url=url), fanout.sqs_client(REGION))
        batch = _notices(notices)

        started = time.perf_counter()
        taken = fanout.enqueue(run, batch, fan_out)
        producer = time.perf_counter() - started
        if len(taken) != notices:
            raise RuntimeError(f"only {len(taken)} of {notices} notices were enqueued")

        records = _received(url)
        started = time.perf_counter()
        sent = 0
        with _latency(mailer.client, ses_latency):
            for first in range(0, len(records), fanout.BATCH_SIZE):
                event = {"Records": records[first : first + fanout.BATCH_SIZE]}
                consumed = fanout.handle_batch(
                    event, now=NOW, settings=settings, mailer=mailer, max_age=timedelta(hours=1)
                )
                if consumed.failures:
                    raise RuntimeError(f"records failed: {consumed.failures}")
                sent += sum(summary.sent for summary in consumed.summaries)
        consumer = time.perf_counter() - started
        if sent != notices:
            raise RuntimeError(f"the consumer sent {sent} of {notices} notices")
    return project(
        producer / notices * 1000,
        consumer / notices * 1000,
        measured=notices,
        due=due,
        quota=quota,
        concurrency=concurrency,
    )


def note_check() -> str:
    """The check whose notices the benchmark hands on (note reminders)."""
    return NOTE_REMINDER.check


def _received(url: str) -> list[dict[str, Any]]:
    """Every message of the queue as Lambda's SQS poller hands it over (no long polling)."""
    client = boto3.client("sqs", region_name=REGION)
    records: list[dict[str, Any]] = []
    while True:
        answer = client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = answer.get("Messages", [])
        if not messages:
            return records
        for message in messages:
            client.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            records.append(
                {
                    "messageId": message["MessageId"],
                    "body": message["Body"],
                    "eventSource": "aws:sqs",
                }
            )


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Start DynamoDB Local, measure, print the figures and the projection."""
    parser = argparse.ArgumentParser(prog="python -m ops.bench_fanout", description=__doc__)
    parser.add_argument("--notices", type=int, default=300)
    parser.add_argument("--due", type=int, default=100_000)
    parser.add_argument("--quota", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=fanout.MAX_CONCURRENCY)
    parser.add_argument("--ses-latency", type=float, default=0.05)
    args = parser.parse_args(argv)
    logger.setLevel("WARNING")  # one INFO line per message would bury the figures

    env = os.environ if environ is None else environ
    os.environ.setdefault("AWS_ACCESS_KEY_ID", env.get("AWS_ACCESS_KEY_ID", "bench"))
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", env.get("AWS_SECRET_ACCESS_KEY", "bench"))
    with tempfile.TemporaryDirectory() as logs, server.running(Path(logs)) as local:
        projection = measure(
            local.endpoint,
            notices=args.notices,
            due=args.due,
            quota=args.quota,
            concurrency=args.concurrency,
            ses_latency=args.ses_latency,
        )
    print("\n".join(projection.lines()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
