"""The chaos soak: weeks of hourly runs of the three checks under injected faults.

DynamoDB is Amazon's DynamoDB Local (ops/ddblocal.py), SES is moto in server
mode on 127.0.0.1, so several worker processes (simulated Lambda containers, started
with ``spawn``) share one SES and one DynamoDB. Time is simulated: every invocation
gets its clock (``now``) from the timeline, nothing sleeps. The code under test is
driven only through its entry points: ``runner.handle_scheduled`` (a Lambda context
whose remaining time the time-budget fault controls) and app.py's ``record_ses_events``
handler for SES events (tests/chaos/adapters.py).

Two passes over the same timeline, each on its own tables:

1. the oracle pass, with no faults, one invocation per event: the notices it delivers
   are the expected set;
2. the soak pass, with faults (tests/chaos/faults.py: SES Throttling,
   TooManyRequests, MessageRejected, AccountSendingPaused, a 500 that SES answered
   without accepting (ambiguous to the sender), SES responses lost after acceptance,
   DynamoDB throttling, DynamoDB answers lost after the write applied or the read
   answered, crashes after the claim, between claim and send, between send and
   record and after the record, a Lambda context nearly out of time, and the same
   DynamoDB faults and crashes inside record_ses_events), concurrent deliveries of
   one event to 2-3 worker processes, old events replayed (days old: refused with
   ``EventTooOld``; hours old, inside the 24 h horizon: they run and must not
   re-send), Lambda's async retries (+1 and +3 minutes, then the dead-letter queue),
   EventBridge's redelivery of an SES event whose handler failed, and SES events
   (Send, Delivery) late, duplicated and out of order. A fault-free drain day
   follows, so retries and the settling of ambiguous sends can finish.

SES's contract with the ledger is the settling window (``SETTLE_MINUTES``): a Send
event comes within it. A "late" Send event is late inside the window (after Lambda's
retries, say); a Delivery event may be hours late. A Send event later than the window
is outside the guarantee: by design the notice is then due again and may go out twice.

How the summary line counts (an identity is one notice: recipient, kind and item, read
from each message SES accepted by tests/chaos/oracle.py, never from the ledger):

- ``invocations``: every invocation of a scheduled function in the soak pass
  (retries, concurrent copies and replays included; SES event deliveries are not);
- ``faulted``: invocations into which at least one fault was injected, or that were
  a concurrent copy or a replay;
- ``expected``: the distinct identities the fault-free oracle pass delivered;
- ``delivered once``: expected identities SES accepted exactly once in the soak;
- ``duplicates``: every acceptance beyond the first of an expected identity, plus
  every acceptance of an identity the oracle never delivered;
- ``lost``: expected identities SES never accepted, except those reported failed:
  an injected MessageRejected refused the message and the ledger entry carrying that
  message's send token ends ``failed`` with that rejection as its reason (listed by
  ``retry-failed``, counted in ``NoticesFailed``). Those are expected-but-failed,
  shown in the table, and count neither as delivered nor as lost;
- ``unknown``: ledger entries still ``unknown`` at the end of the drain day.

The soak passes (exit 0) with 0 duplicates, 0 lost and 0 unknown, and at least
``--min-faulted`` faulted invocations (``make chaos``: 1,000).
"""

from __future__ import annotations

import argparse
import heapq
import logging
import math
import os
import random
import socket
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as datetime_time
from multiprocessing import get_context
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3

from chalicelib.config import Reliability
from ops import ddblocal
from ops.demo import LENDER_ENVIRONMENT
from ops.provisioning import provision
from ops.stages import REGION
from tests.chaos import crm, oracle
from tests.chaos.faults import MARKER, FaultRates

ACCOUNT = "123456789012"
SYDNEY = ZoneInfo("Australia/Sydney")
SENDER = "reminders@lender.example.com.au"
CONFIGURATION_SET = "loan-reminders-chaos"
CHECKS = ("stale_applications", "note_reminders", "repayment_reminders")
RETRY_DELAYS = (timedelta(minutes=1), timedelta(minutes=3))  # Lambda's async retries
DEFAULT_START = date(2026, 12, 1)
SETTLE = timedelta(minutes=Reliability().settle_minutes)
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Options:
    """The soak's command line."""

    days: int
    seed: int
    workers: int
    faults: bool
    start: date
    concurrency: float
    replays: float
    log_dir: Path | None
    min_faulted: int = 0
    fault_scale: float = 1.0


def parse_args(argv: list[str] | None) -> Options:
    """``--days``/``--invocations``, ``--seed``, ``--workers``, ``--no-faults``, ..."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--days", type=int, help="simulated days of hourly runs (default 14)")
    size.add_argument(
        "--invocations",
        type=int,
        help="at least this many scheduled invocations (3 checks x 24 a day)",
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed of the faults")
    parser.add_argument("--workers", type=int, default=3, help="worker processes (2-3 race)")
    parser.add_argument("--no-faults", action="store_true", help="the soak pass without faults")
    parser.add_argument("--start", type=date.fromisoformat, default=DEFAULT_START)
    parser.add_argument(
        "--concurrency", type=float, default=0.2, help="share of events delivered 2-3 times"
    )
    parser.add_argument(
        "--min-faulted",
        type=int,
        default=0,
        help="fail unless at least this many invocations had a fault injected",
    )
    parser.add_argument(
        "--fault-scale", type=float, default=1.0, help="multiply every fault rate by this"
    )
    parser.add_argument("--replays", type=float, default=0.05, help="share of old events replayed")
    parser.add_argument("--log-dir", type=Path, help="where the workers' logs go (default: tmp)")
    args = parser.parse_args(argv)
    days = args.days or (math.ceil(args.invocations / 72) if args.invocations else 14)
    if days < 1 or args.workers < 1:
        parser.error("--days/--invocations and --workers must be positive")
    return Options(
        days=days,
        seed=args.seed,
        workers=args.workers,
        faults=not args.no_faults,
        start=args.start,
        concurrency=args.concurrency,
        replays=args.replays,
        log_dir=args.log_dir,
        min_faulted=args.min_faulted,
        fault_scale=args.fault_scale,
    )


# -- infrastructure -----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def moto_ses() -> Iterator[str]:
    """moto in server mode on 127.0.0.1 (SES and SESv2); its backend lives in this process."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def accepted_messages() -> list[Any]:
    """Every message moto's SES accepted so far, in order."""
    from moto.ses.models import ses_backends

    return list(ses_backends[ACCOUNT][REGION].sent_messages)


def base_environment(dynamodb: str, ses: str) -> dict[str, str]:
    """Fake credentials and loopback endpoints: nothing can reach real AWS."""
    return {
        "AWS_ACCESS_KEY_ID": "chaos",
        "AWS_SECRET_ACCESS_KEY": "chaos",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "DYNAMODB_ENDPOINT_URL": dynamodb,
        "AWS_ENDPOINT_URL_DYNAMODB": dynamodb,
        "AWS_ENDPOINT_URL_SES": ses,
        "AWS_ENDPOINT_URL_SESV2": ses,
        "SENDER_EMAIL": SENDER,
        **LENDER_ENVIRONMENT,
        "BUSINESS_TIMEZONE": "Australia/Sydney",
        "SES_CONFIGURATION_SET": CONFIGURATION_SET,
        "POWERTOOLS_SERVICE_NAME": "loan-reminders-chaos",
    }


def table_environment(namespace: str) -> dict[str, str]:
    """Table names of one pass (each pass has its own tables)."""
    names = ("applications", "notes", "repayments", "staff", "borrowers", "notifications")
    return {f"{name.upper()}_TABLE": f"chaos-{namespace}-{name}" for name in names}


class Workers:
    """Worker processes (``spawn``), each a warm Lambda container with its own faults."""

    def __init__(self, count: int, env: dict[str, str], log_dir: Path, name: str) -> None:
        from tests.chaos import worker

        context = get_context("spawn")
        self.conns: list[Connection] = []
        self.processes = []
        for n in range(count):
            parent, child = context.Pipe()
            process = context.Process(
                target=worker.main,
                args=(child, env, str(log_dir / f"{name}-worker-{n}.log")),
                daemon=True,
            )
            process.start()
            child.close()
            self.conns.append(parent)
            self.processes.append(process)
        for conn in self.conns:
            conn.recv()  # ready

    def run(self, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Run ``jobs`` at the same time, each in its own worker."""
        assert len(jobs) <= len(self.conns)
        for conn, job in zip(self.conns, jobs, strict=False):
            conn.send(job)
        return [conn.recv() for conn in self.conns[: len(jobs)]]

    def close(self) -> None:
        """Stop every worker."""
        for conn in self.conns:
            conn.send(None)
        for process in self.processes:
            process.join(timeout=30)


# -- one pass over the timeline -----------------------------------------------------------


@dataclass
class CheckStats:
    """What happened to one check's invocations."""

    invocations: int = 0
    retries: int = 0
    accepted: int = 0
    dead_lettered: int = 0
    crashed: int = 0
    refused: int = 0
    errors: int = 0


@dataclass
class PassResult:
    """What one pass did and what SES accepted during it."""

    invocations: int = 0
    faulted: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    checks: dict[str, CheckStats] = field(default_factory=lambda: defaultdict(CheckStats))
    ses_events: Counter[str] = field(default_factory=Counter)
    replays: Counter[str] = field(default_factory=Counter)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    failed_tokens: set[str] = field(default_factory=set)
    messages: list[str] = field(default_factory=list)
    ledger: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    ses_handler: bool = True


def scheduled_event(check: str, at: datetime) -> dict[str, Any]:
    """The EventBridge event of ``check``'s hourly schedule at ``at``."""
    function = f"check_{check}"
    return {
        "version": "0",
        "id": f"chaos-{check}-{at:%Y%m%dT%H%M}",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT,
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/loan-reminders-chaos-{function}"],
        "detail": {},
    }


def ses_event(accepted: dict[str, Any], event_type: str, when: datetime) -> dict[str, Any]:
    """The EventBridge event SES publishes for a message (Send or Delivery)."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    sent = datetime.fromisoformat(accepted["accepted_at"]).astimezone(UTC)
    detail: dict[str, Any] = {
        "eventType": event_type,
        "mail": {
            "timestamp": sent.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "source": accepted["source"],
            "sendingAccountId": ACCOUNT,
            "messageId": accepted["message_id"],
            "destination": accepted["destination"],
            "headersTruncated": False,
            "tags": accepted["tags"],
        },
    }
    if event_type == "Send":
        detail["send"] = {}
    else:
        detail["delivery"] = {
            "timestamp": stamp,
            "processingTimeMillis": 900,
            "recipients": accepted["destination"],
            "smtpResponse": "250 2.0.0 OK",
            "reportingMTA": "chaos.invalid",
        }
    return {
        "version": "0",
        "id": str(uuid.UUID(int=random.getrandbits(128))),
        "detail-type": {"Send": "Email Sent", "Delivery": "Email Delivered"}[event_type],
        "source": "aws.ses",
        "account": ACCOUNT,
        "time": stamp,
        "region": REGION,
        "resources": [f"arn:aws:ses:{REGION}:{ACCOUNT}:configuration-set/{CONFIGURATION_SET}"],
        "detail": detail,
    }


class Timeline:
    """A simulated clock's agenda: (when, order, kind, payload), earliest first."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, int, str, dict[str, Any]]] = []
        self._order = 0

    def add(self, when: datetime, kind: str, payload: dict[str, Any]) -> None:
        """Schedule ``kind`` at ``when``."""
        self._order += 1
        heapq.heappush(self._heap, (when, self._order, kind, payload))

    def pop(self) -> tuple[datetime, str, dict[str, Any]]:
        """The next thing to happen."""
        when, _, kind, payload = heapq.heappop(self._heap)
        return when, kind, payload

    def next_kind(self) -> str | None:
        """The kind of the next thing, without taking it."""
        return self._heap[0][2] if self._heap else None

    def __bool__(self) -> bool:
        return bool(self._heap)


class Pass:
    """One pass of the timeline on its own tables."""

    def __init__(
        self, name: str, opts: Options, env: dict[str, str], log_dir: Path, faults: bool
    ) -> None:
        self.name, self.opts, self.faults = name, opts, faults
        self.env = {**env, **table_environment(name)}
        self.log_dir = log_dir
        self.rng = random.Random(f"{opts.seed}-{name}")
        self.rates = (
            {
                fault: min(1.0, rate * opts.fault_scale)
                for fault, rate in FaultRates().as_dict().items()
            }
            if faults
            else None
        )
        self.result = PassResult()
        self.timeline = Timeline()
        self.start = datetime.combine(opts.start, datetime.min.time(), SYDNEY)
        self.faulted_end = self.start + timedelta(days=opts.days)
        self.end = self.faulted_end + timedelta(days=1)  # the fault-free drain day
        from tests.chaos import adapters

        self.ses_handler = adapters.ses_events_handler() is not None
        self.result.ses_handler = self.ses_handler

    def prepare(self) -> None:
        """Create this pass's tables and seed its CRM."""
        from chalicelib.config import Settings

        os.environ.update(self.env)
        provision(Settings.from_env(), poll_seconds=0.2)
        crm.seed(self.opts.start, self.opts.days, SYDNEY)

    def run(self) -> PassResult:
        """Run the timeline to its end; collect what SES accepted and the ledger."""
        clock = time.monotonic()
        self.prepare()
        self.result.seconds["prepare"] += time.monotonic() - clock
        before = len(accepted_messages())
        hours = int((self.end - self.start) / timedelta(hours=1))
        for hour in range(hours):
            at = self.start + timedelta(hours=hour)
            for check in CHECKS:
                self.timeline.add(at, "invoke", {"check": check, "at": at, "attempt": 1})
        clock = time.monotonic()
        workers = Workers(self.opts.workers, self.env, self.log_dir, self.name)
        self.result.seconds["start workers"] += time.monotonic() - clock
        try:
            while self.timeline:
                when, kind, payload = self.timeline.pop()
                clock = time.monotonic()
                if kind == "invoke":
                    self._invoke(workers, when, payload)
                else:
                    self._ses_events(workers, when, payload)
                self.result.seconds[kind] += time.monotonic() - clock
        finally:
            workers.close()
        self.result.messages = [m.raw_data for m in accepted_messages()[before:]]
        self.result.ledger = self._ledger_statuses()
        return self.result

    def _faulted(self, when: datetime) -> bool:
        return self.faults and when < self.faulted_end

    def _in_window(self, check: str, at: datetime) -> bool:
        from chalicelib import registry
        from chalicelib.config import Windows

        local = at.astimezone(SYDNEY).time()
        windows = Windows()
        start: datetime_time = getattr(windows, registry.CHECKS[check].window_start)
        return start <= local < windows.end

    def _invoke(self, workers: Workers, now: datetime, payload: dict[str, Any]) -> None:
        check, at, attempt = payload["check"], payload["at"], payload["attempt"]
        faulted = self._faulted(now)
        event = payload.get("event") or scheduled_event(check, at)
        copies = 1
        if faulted and attempt == 1 and self._in_window(check, at):
            if self.rng.random() < self.opts.concurrency:
                copies = min(self.rng.choice((2, 3)), self.opts.workers)
                self.result.injected["concurrent invocation"] += copies - 1
            if self.rng.random() < self.opts.replays:
                self._replay(workers, now, check, at)
        jobs = [
            {
                "kind": "invoke",
                "check": check,
                "event": event,
                "now": now.isoformat(),
                "rates": self.rates if faulted else None,
                "seed": self.rng.getrandbits(32),
            }
            for _ in range(copies)
        ]
        stats = self.result.checks[check]
        for result in workers.run(jobs):
            self._count(check, result, faulted=copies > 1)
            if attempt > 1:
                stats.retries += 1
            if result["outcome"] in ("ok", "refused"):
                continue
            if attempt <= len(RETRY_DELAYS):
                retry = {"check": check, "at": at, "attempt": attempt + 1, "event": event}
                self.timeline.add(at + RETRY_DELAYS[attempt - 1], "invoke", retry)
            else:
                stats.dead_lettered += 1

    def _replay(self, workers: Workers, now: datetime, check: str, at: datetime) -> None:
        """Re-drive an old event, as from the dead-letter queue or by hand.

        Half are days old (past the horizon: refused with ``EventTooOld``), half are
        hours old (inside it: they run, and the ledger must keep them from re-sending).
        """
        # An event inside the horizon is one of this timeline's own (the service did
        # not run before its start: an earlier event would be a first run, not a replay).
        inside = min(Reliability().event_max_age_hours - 1, (at - self.start) // HOUR)
        if inside < 1 or self.rng.random() < 0.5:
            age, label = timedelta(days=self.rng.randint(2, 5)), "beyond the horizon"
        else:
            age, label = self.rng.randint(1, inside) * HOUR, "within the horizon"
        old = scheduled_event(check, at - age)
        job = {"kind": "invoke", "check": check, "event": old, "now": now.isoformat()}
        result = workers.run([{**job, "rates": None, "seed": 0}])[0]
        self.result.injected[f"replayed old event ({label})"] += 1
        self.result.replays[f"{label}: {result['outcome']}"] += 1
        self._count(check, result, faulted=True)

    def _count(self, check: str, result: dict[str, Any], *, faulted: bool) -> None:
        stats = self.result.checks[check]
        stats.invocations += 1
        self.result.invocations += 1
        injected = result.get("injected") or {}
        self.result.injected.update(injected)
        if faulted or injected:
            self.result.faulted += 1
        stats.crashed += result["outcome"] == "crashed"
        stats.refused += result["outcome"] == "refused"
        stats.errors += result["outcome"] == "error"
        self._note_error(result)
        self.result.rejected.extend(result.get("rejected") or [])
        accepted = result.get("accepted") or []
        stats.accepted += len(accepted)
        for message in accepted:
            self._schedule_ses_events(message)

    def _note_error(self, result: dict[str, Any]) -> None:
        if result.get("error") and result["outcome"] != "crashed":
            self.result.errors[str(result["error"])[:120]] += 1

    def _schedule_ses_events(self, message: dict[str, Any]) -> None:
        if not self.ses_handler:
            return
        sent = datetime.fromisoformat(message["accepted_at"])
        if not self._faulted(sent):
            self.timeline.add(sent + timedelta(seconds=5), "ses", {"m": message, "t": "Send"})
            self.timeline.add(sent + timedelta(seconds=9), "ses", {"m": message, "t": "Delivery"})
            return
        rng, injected = self.rng, self.result.injected
        # SES's contract with the ledger is the settling window: a Send event comes
        # within it. "Late" is late inside that window (the next runs, Lambda's own
        # retries at +1 and +3 minutes, may run first); Delivery may come hours later.
        if rng.random() < 0.2:
            send = sent + timedelta(seconds=rng.uniform(0.3, 0.95) * SETTLE.total_seconds())
            injected["SES Send event late (within the settling window)"] += 1
        else:
            send = sent + timedelta(seconds=rng.uniform(2, 120))
        delivery = send + timedelta(seconds=rng.uniform(1, 600))
        if rng.random() < 0.1:
            delivery = send + timedelta(hours=rng.uniform(1, 6))
            injected["SES Delivery event hours late"] += 1
        elif rng.random() < 0.15:
            delivery = sent + (send - sent) * rng.random()
            injected["SES events out of order (Delivery before Send)"] += 1
        self.timeline.add(send, "ses", {"m": message, "t": "Send"})
        self.timeline.add(delivery, "ses", {"m": message, "t": "Delivery"})
        if rng.random() < 0.1:
            kind = rng.choice(("Send", "Delivery"))
            again = send + timedelta(seconds=rng.uniform(1, 7200))
            self.timeline.add(again, "ses", {"m": message, "t": kind})
            injected[f"SES {kind} event duplicated"] += 1

    def _ses_events(self, workers: Workers, when: datetime, payload: dict[str, Any]) -> None:
        """Deliver a batch of due SES events to record_ses_events (one worker).

        Under faults the handler's own DynamoDB calls are faulted too; an event whose
        invocation failed or died is delivered again a minute later, as EventBridge
        retries a failed target.
        """
        batch = [(when, payload)]
        while self.timeline.next_kind() == "ses" and len(batch) < 50:
            next_when, _, next_payload = self.timeline.pop()
            batch.append((next_when, next_payload))
        events = []
        for at, item in batch:
            item.setdefault("event", ses_event(item["m"], item["t"], at))
            events.append((at.isoformat(), item["event"]))
        faulted = self._faulted(when)
        job = {
            "kind": "ses_events",
            "now": when.isoformat(),
            "events": events,
            "rates": self.rates if faulted else None,
            "seed": self.rng.getrandbits(32),
        }
        result = workers.run([job])[0]
        self.result.ses_events.update(p["t"] for _, p in batch)
        self.result.injected.update(result.get("injected") or {})
        for index in result.get("redeliver") or []:
            at, item = batch[index]
            self.timeline.add(at + timedelta(minutes=1), "ses", item)
            self.result.injected["SES event redelivered after its handler failed"] += 1
        self._note_error(result)

    def _ledger_statuses(self) -> Counter[str]:
        """Ledger entries by status (failed ones by reason): the soak may Scan, a check not.

        Also notes the send token of every entry failed by an injected rejection.
        """
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        statuses: Counter[str] = Counter()
        pages = dynamodb.get_paginator("scan").paginate(
            TableName=self.env["NOTIFICATIONS_TABLE"],
            ProjectionExpression="#s, failure_reason, send_token",
            ExpressionAttributeNames={"#s": "status"},
        )
        for page in pages:
            for item in page["Items"]:
                if "status" not in item:
                    continue  # the checks' schedule and records, not notices
                status = item["status"]["S"]
                reason = item.get("failure_reason", {}).get("S")
                statuses[f"{status} ({reason[:60]})" if reason else status] += 1
                token = item.get("send_token", {}).get("S")
                if status == "failed" and token and reason and MARKER in reason:
                    self.result.failed_tokens.add(token)
        return statuses


# -- report ---------------------------------------------------------------------------------


def delivered(messages: list[str]) -> list[oracle.Identity]:
    """Every notice identity the accepted messages deliver, once per delivery."""
    return [ident for raw in messages for ident in oracle.identities(oracle.parse(raw))]


def reported_failed(soak: PassResult) -> list[oracle.Identity]:
    """Notices an injected MessageRejected refused, whose ledger entry says so at the end.

    The rejected message's send token must be the one on a ``failed`` entry whose
    reason is the injected rejection: the service recorded and reported the failure
    (``retry-failed`` lists it, ``NoticesFailed`` counts it). A rejected notice whose
    entry ended in any other state is not excused.
    """
    return [
        ident
        for rejection in soak.rejected
        if rejection.get("send_token") in soak.failed_tokens
        for ident in rejection["identities"]
    ]


# Long because it prints the soak's tables in the order a reader checks them; each table is a
# few lines of formatting with nothing to share.
def report(soak: PassResult, expected: list[oracle.Identity], opts: Options) -> oracle.Tally:
    """Print the tables and return the tally."""
    result = oracle.tally(
        expected,
        delivered(soak.messages),
        unknown=sum(n for k, n in soak.ledger.items() if k.split()[0] == "unknown"),
        reported_failed=reported_failed(soak),
    )
    print(oracle.table(["fault", "injected"], sorted(soak.injected.items())))
    print()
    rows = [
        (
            check,
            s.invocations,
            s.accepted,
            s.retries,
            s.dead_lettered,
            s.crashed,
            s.refused,
            s.errors,
        )
        for check, s in sorted(soak.checks.items())
    ]
    print(
        oracle.table(
            [
                "check",
                "invocations",
                "sent",
                "retries",
                "dead-lettered",
                "crashed",
                "refused",
                "errors",
            ],
            rows,
        )
    )
    print()
    print(
        oracle.table(
            ["other", "count"],
            [
                *(
                    (f"SES {kind} events delivered", n)
                    for kind, n in sorted(soak.ses_events.items())
                ),
                *(
                    [("SES events (app.py has no record_ses_events: none delivered)", 0)]
                    if not soak.ses_handler
                    else []
                ),
                *((f"replays: {outcome}", n) for outcome, n in sorted(soak.replays.items())),
                *((f"ledger at the end: {status}", n) for status, n in sorted(soak.ledger.items())),
                ("messages SES accepted", len(soak.messages)),
                ("delivered but not expected", result.unexpected),
                ("expected, rejected by SES and reported failed", result.rejected),
            ],
        )
    )
    for title, ids in (
        ("duplicated", result.duplicate_ids),
        ("lost", result.lost_ids),
        ("unexpected", result.unexpected_ids),
    ):
        if ids:
            print(f"\n{title} ({len(ids)}, first 10):")
            for ident in ids[:10]:
                print("  " + " | ".join(ident))
    if soak.errors:
        print("\ninvocation errors (first 10 kinds):")
        for error, n in soak.errors.most_common(10):
            print(f"  {n} x {error}")
    return result


def main(argv: list[str] | None = None) -> int:
    """Run both passes and print the table and the summary line; 0 only on target."""
    opts = parse_args(argv)
    started = time.monotonic()
    for name in [n for n in os.environ if n.startswith(("AWS_", "POWERTOOLS_"))]:
        del os.environ[name]
    log_dir = opts.log_dir or Path(tempfile.mkdtemp(prefix="chaos-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    with ddblocal.running(log_dir) as dynamodb, moto_ses() as ses:
        env = base_environment(dynamodb.endpoint, ses)
        os.environ.update(env)
        boto3.client("ses", region_name=REGION).verify_email_identity(EmailAddress=SENDER)
        boto3.client("sesv2", region_name=REGION).create_configuration_set(
            ConfigurationSetName=CONFIGURATION_SET
        )
        reference = Pass("oracle", opts, env, log_dir, faults=False).run()
        expected = delivered(reference.messages)
        repeated = [i for i, n in Counter(expected).items() if n > 1]
        if repeated:
            print(f"harness error: the fault-free oracle pass delivered {repeated[:3]} twice")
            return 2
        soak = Pass("soak", opts, env, log_dir, faults=opts.faults).run()
    result = report(soak, expected, opts)
    print(
        f"\n{opts.days} simulated days from {opts.start} (+1 fault-free drain day), "
        f"seed {opts.seed}, {opts.workers} workers, {time.monotonic() - started:.0f} s, "
        f"logs in {log_dir}"
    )
    for name, spent in (("oracle", reference.seconds), ("soak", soak.seconds)):
        print(f"{name} pass: " + ", ".join(f"{k} {v:.1f} s" for k, v in sorted(spent.items())))
    problems = harness_problems(soak, opts)
    for problem in problems:
        print(problem)
    print(oracle.summary_line(soak.invocations, soak.faulted, result))
    sys.stdout.flush()
    return 0 if result.passed and not problems else 1


def harness_problems(soak: PassResult, opts: Options) -> list[str]:
    """What fails the soak besides the tally: too few faults, replays handled wrongly.

    A replay older than the horizon must be refused (``EventTooOld``); one inside it
    must run (and the tally proves it re-sent nothing).
    """
    problems = []
    if soak.faulted < opts.min_faulted:
        problems.append(
            f"too few faulted invocations: {soak.faulted} < --min-faulted {opts.min_faulted}"
        )
    for outcome, count in sorted(soak.replays.items()):
        beyond = outcome.startswith("beyond the horizon")
        if beyond != outcome.endswith(": refused"):
            problems.append(f"replays {outcome}: {count} (expected the opposite)")
    return problems
