"""``make bench``'s reads: what a run costs in DynamoDB requests and capacity, against history.

For each check, a CRM with a fixed number of due notices and 100, then 10,000 items
already handled inside the ranges the check used to query (alerted long-stale
applications, notes reminded within the catch-up days, repayments notified within
their windows), seeded with BatchWriteItem in the state the service leaves them in
(their sent ledger entries, flags and schedule entries). Then the check runs, and
runs again an hour later with nothing new due. DynamoDB Local reports the capacity
each request consumed (``ReturnConsumedCapacity=TOTAL``, added to every request by a
botocore hook); moto reports a constant, so it is not used here. SES is a stand-in
that accepts every message: only DynamoDB is measured.

``python -m ops.bench_reads`` starts DynamoDB Local (``node_modules``), prints one
table per check and the worst figures.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from chalicelib import schedule
from chalicelib.checks.note_reminders import NOTE_REMINDER, settled_element
from chalicelib.checks.repayment_reminders import TIERS, next_notice_on, tier_for
from chalicelib.checks.repayment_reminders import notice_key as repayment_key
from chalicelib.checks.stale_applications import NAME as STALE
from chalicelib.checks.stale_applications import STALE_DIGEST
from chalicelib.config import Settings
from chalicelib.formatting import ACTIVE_STAGES
from chalicelib.mailer import Mailer
from chalicelib.models import (
    NOTES_PENDING,
    REPAYMENTS_PENDING,
    Application,
    Borrower,
    Note,
    Notification,
    Repayment,
    Staff,
)
from chalicelib.observability import logger
from chalicelib.runner import run_check
from ops.ddblocal import running
from ops.demo import LENDER_ENVIRONMENT
from ops.provisioning import provision, put_items, table_environment
from ops.stages import REGION

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_sesv2 import SESV2Client

SYDNEY = ZoneInfo("Australia/Sydney")
TODAY = date(2026, 11, 23)
FIRST_RUN = datetime(2026, 11, 23, 12, 0, tzinfo=SYDNEY)
RERUN = FIRST_RUN + timedelta(hours=1)
HISTORIES: tuple[int, int] = (100, 10_000)
# Notices due at the first run, for each check and each history.
DUE = 40
BDMS = 4
APPLICATION_POOL = 200
SENDER = "reminders@lender.example.com.au"
READS = {"Query", "Scan", "GetItem", "BatchGetItem", "TransactGetItems"}
CHECKS = ("stale_applications", "note_reminders", "repayment_reminders")


@dataclass(frozen=True)
class Figures:
    """One check's cost at one history size: the first run (per due notice) and a rerun."""

    history: int
    due: int
    requests: int
    rcu: float
    rerun_requests: int
    rerun_rcu: float

    @property
    def requests_per_notice(self) -> float:
        """DynamoDB requests of the first run per notice it sent."""
        return self.requests / max(self.due, 1)

    @property
    def rcu_per_notice(self) -> float:
        """Read capacity of the first run per notice it sent."""
        return self.rcu / max(self.due, 1)


@dataclass(frozen=True)
class CheckReads:
    """One check's figures at the smallest and the largest history."""

    check: str
    small: Figures
    large: Figures

    @property
    def growth(self) -> float:
        """The larger of the per-notice request and capacity ratios, large over small."""
        return max(
            self.large.requests_per_notice / self.small.requests_per_notice,
            self.large.rcu_per_notice / self.small.rcu_per_notice,
        )

    @property
    def rerun_requests(self) -> int:
        """The rerun's requests at the larger of the two histories."""
        return max(self.small.rerun_requests, self.large.rerun_requests)

    @property
    def rerun_rcu(self) -> float:
        """The rerun's read capacity at the larger of the two histories."""
        return max(self.small.rerun_rcu, self.large.rerun_rcu)


@dataclass(frozen=True)
class ReadsBench:
    """Every check's figures; ``growth``, ``rerun_requests`` and ``rerun_rcu`` are the worst."""

    checks: tuple[CheckReads, ...]
    histories: tuple[int, int] = HISTORIES

    @property
    def growth(self) -> float:
        """The worst per-notice growth over the checks (history 100 -> 10,000)."""
        return max(c.growth for c in self.checks)

    @property
    def rerun_requests(self) -> int:
        """The worst rerun's requests over the checks and histories."""
        return max(c.rerun_requests for c in self.checks)

    @property
    def rerun_rcu(self) -> float:
        """The worst rerun's read capacity over the checks and histories."""
        return max(c.rerun_rcu for c in self.checks)

    def line(self) -> str:
        """``reads growth <x.xx> (history 100->10000), rerun <n> requests <r> RCU``."""
        return (
            f"reads growth {self.growth:.2f} (history {self.histories[0]}->{self.histories[1]}), "
            f"rerun {self.rerun_requests} requests {self.rerun_rcu:g} RCU"
        )


@dataclass
class Meter:
    """DynamoDB requests and the read capacity they consumed, counted by botocore hooks."""

    requests: int = 0
    rcu: float = 0.0
    operations: list[str] = field(default_factory=list)

    def ask(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        """Ask for the capacity of every request that can report it."""
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params["ReturnConsumedCapacity"] = "TOTAL"

    def count(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        """Count one request and, for a read, the capacity it consumed."""
        self.requests += 1
        self.operations.append(model.name)
        if model.name not in READS:
            return
        consumed = parsed.get("ConsumedCapacity") or []
        for item in consumed if isinstance(consumed, list) else [consumed]:
            self.rcu += float(item.get("CapacityUnits", 0.0))

    def reset(self) -> None:
        """Start counting again."""
        self.requests, self.rcu, self.operations = 0, 0.0, []


class _AcceptingSes:
    """SES that accepts every message (only DynamoDB is measured)."""

    def send_email(self, **_: Any) -> dict[str, str]:
        return {"MessageId": uuid.uuid4().hex}

    def get_account(self) -> dict[str, Any]:
        # A quota no run here comes near: pacing is not what this bench measures.
        quota = {"MaxSendRate": 10_000.0, "Max24HourSend": 1e9, "SentLast24Hours": 0.0}
        return {"SendQuota": quota, "SendingEnabled": True}


def _settings(endpoint: str | None, prefix: str) -> Settings:
    where = {} if endpoint is None else {"DYNAMODB_ENDPOINT_URL": endpoint}
    return Settings.from_env(
        where
        | {
            **table_environment(prefix),
            "SENDER_EMAIL": SENDER,
            **LENDER_ENVIRONMENT,
            "AWS_REGION": REGION,
            "BUSINESS_TIMEZONE": "Australia/Sydney",
            "SES_CONFIGURATION_SET": "bench",
        }
    )


def _client() -> DynamoDBClient:
    """The one DynamoDB client the models send through (bound to the bench's endpoint)."""
    return cast("DynamoDBClient", Notification._get_connection().connection.client)


def _write(table: str, items: Iterable[dict[str, Any]]) -> None:
    """Write ``items`` into ``table`` through the models' client, 25 a request."""
    put_items(_client(), table, items)


def _sent(key: str, kind: str, item_id: str, recipient: str) -> dict[str, Any]:
    """A ledger entry as a run leaves a notice it sent yesterday."""
    at = datetime(2026, 11, 22, 1, 0, tzinfo=UTC)
    return Notification(
        id=key,
        kind=kind,
        item_id=item_id,
        recipient_id=recipient,
        recipient_email=f"{recipient}@example.net",
        business_date=(TODAY - timedelta(days=1)).isoformat(),
        status="sent",
        run_id="seed",
        attempts=1,
        created_at=at,
        updated_at=at,
        claimed_at=at,
        lease_expires_at=at + timedelta(minutes=15),
        sent_at=at,
        message_id=uuid.uuid4().hex,
        subject="seeded",
        send_token=uuid.uuid4().hex,
    ).serialize()


def _staff() -> None:
    _write(
        Staff.Meta.table_name,
        (
            Staff(
                id=f"{role}-{n}", name=f"{role} {n}", email=f"{role}{n}@lender.example.com"
            ).serialize()
            for role in ("bdm", "user")
            for n in range(BDMS)
        ),
    )


def _application(app_id: str, n: int, stage: str, changed: date | None) -> dict[str, Any]:
    return Application(
        id=app_id,
        reference_number=f"APP-{app_id}",
        stage=stage,
        stage_last_updated=f"{changed.isoformat()}T10:00:00+11:00" if changed else None,
        loan_amount=500_000,
        broker_name="Harbour Finance Brokers",
        bd_id=f"bdm-{n % BDMS}",
        borrower_ids=[f"bor-{n % APPLICATION_POOL}"],
    ).serialize()


def seed_stale(history: int, due: int, settings: Settings) -> None:
    """Long-stale applications alerted this cycle (next due in 4 days), and DUE at day 14."""
    _staff()
    apps: list[dict[str, Any]] = []
    ledger_items: list[dict[str, Any]] = []
    for n in range(history):
        cycle = n % 8
        changed = TODAY - timedelta(days=17 + 7 * cycle)
        stage = ACTIVE_STAGES[n % len(ACTIVE_STAGES)]
        app_id = f"hist-{n}"
        apps.append(_application(app_id, n, stage, changed))
        slu = f"{changed.isoformat()}T10:00:00+11:00"
        key = STALE_DIGEST.key(app_id, stage, slu, cycle)
        ledger_items.append(_sent(key, STALE_DIGEST.name, app_id, f"bdm-{n % BDMS}"))
        ledger_items.append(
            {
                "id": {"S": schedule.key(STALE, app_id)},
                "due_check": {"S": STALE},
                "due_on": {"S": (TODAY + timedelta(days=4)).isoformat()},
            }
        )
    for n in range(due):
        apps.append(_application(f"new-{n}", n, "valuation_ordered", TODAY - timedelta(days=14)))
    _write(Application.Meta.table_name, apps)
    _write(Notification.Meta.table_name, ledger_items)
    yesterday = TODAY - timedelta(days=1)
    below = (yesterday - timedelta(days=settings.thresholds.stale_after_days)).isoformat()
    schedule.record_sweep(STALE, schedule.Sweep(yesterday, below))


def _pool() -> None:
    _staff()
    _write(
        Application.Meta.table_name,
        (_application(f"app-{n}", n, "valuation_ordered", None) for n in range(APPLICATION_POOL)),
    )
    _write(
        Borrower.Meta.table_name,
        (
            Borrower(
                id=f"bor-{n}", name=f"Borrower {n}", email=f"borrower{n}@example.net"
            ).serialize()
            for n in range(APPLICATION_POOL)
        ),
    )


def seed_notes(history: int, due: int, settings: Settings) -> None:
    """Notes reminded within the catch-up days, and DUE/2 notes due today (author and BDM)."""
    _pool()
    notes: list[dict[str, Any]] = []
    ledger_items: list[dict[str, Any]] = []
    records: dict[str, set[str]] = {}
    for n in range(history):
        day = TODAY - timedelta(days=n % 4)
        remind = day.isoformat()
        app = n % APPLICATION_POOL
        notes.append(_note(f"hist-{n}", remind, app, pending=False))
        author, bdm = f"user-{app % BDMS}", f"bdm-{app % BDMS}"
        for person in (author, bdm):
            key = NOTE_REMINDER.key(f"hist-{n}", remind, person)
            ledger_items.append(_sent(key, NOTE_REMINDER.name, f"hist-{n}", person))
        record, element = settled_element(f"hist-{n}", day, author, bdm, 2)
        records.setdefault(record, set()).add(element)
    ledger_items.extend(
        {"id": {"S": record}, "done_notes": {"SS": sorted(elements)}}
        for record, elements in records.items()
    )
    for n in range(due // 2):
        notes.append(_note(f"new-{n}", TODAY.isoformat(), n % APPLICATION_POOL, pending=True))
    _write(Note.Meta.table_name, notes)
    _write(Notification.Meta.table_name, ledger_items)


def _note(note_id: str, remind: str, app: int, *, pending: bool) -> dict[str, Any]:
    # A reminded note has left the pending index; a new one is in it (the CRM's mark).
    return Note(
        id=note_id,
        title=f"Note {note_id}",
        content="Follow up the valuation.",
        remind_date=remind,
        application_id=f"app-{app}",
        created_by=f"user-{app % BDMS}",
        created_at="2026-11-01T09:00:00+11:00",
        pending_check=NOTES_PENDING if pending else None,
    ).serialize()


def seed_repayments(history: int, due: int, settings: Settings) -> None:
    """Unpaid repayments notified in their current window, and DUE upcoming ones unnotified."""
    _pool()
    t = settings.thresholds
    windows = [
        d
        for d in range(-t.upcoming_days, t.escalation_until_days + 1)
        if tier_for(d, t) is not None
    ]
    repayments: list[dict[str, Any]] = []
    ledger_items: list[dict[str, Any]] = []
    for n in range(history):
        days = windows[n % len(windows)]
        tier = tier_for(days, settings.thresholds)
        assert tier is not None
        due_date = TODAY - timedelta(days=days)
        app = n % APPLICATION_POOL
        item = Repayment(
            id=f"hist-{n}",
            application_id=f"app-{app}",
            amount=2450.5,
            due_date=due_date.isoformat(),
        )
        setattr(item, tier.flag, True)
        # Where the check leaves it: at the day its next notice is due, or out of the index.
        later = TIERS[TIERS.index(tier) + 1 :]
        next_on = next_notice_on(due_date, later, TODAY, settings.thresholds)
        if next_on is not None:
            item.pending_check = REPAYMENTS_PENDING
            item.next_notice_on = next_on.isoformat()
        repayments.append(item.serialize())
        person = f"bdm-{app % BDMS}" if tier.to_bdm else f"bor-{app}"
        key = repayment_key(f"hist-{n}", due_date, tier, person)
        ledger_items.append(_sent(key, tier.kind.name, f"hist-{n}", person))
    for n in range(due):
        repayments.append(
            Repayment(
                id=f"new-{n}",
                application_id=f"app-{n % APPLICATION_POOL}",
                amount=2450.5,
                due_date=(TODAY + timedelta(days=5)).isoformat(),
                pending_check=REPAYMENTS_PENDING,
                next_notice_on=TODAY.isoformat(),
            ).serialize()
        )
    _write(Repayment.Meta.table_name, repayments)
    _write(Notification.Meta.table_name, ledger_items)


SEEDS: dict[str, Callable[[int, int, Settings], None]] = {
    "stale_applications": seed_stale,
    "note_reminders": seed_notes,
    "repayment_reminders": seed_repayments,
}


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep the runs' summary lines out of the bench's output."""
    level = logger.log_level
    logger.setLevel("WARNING")
    try:
        yield
    finally:
        logger.setLevel(level)


def _credentials() -> None:
    # DynamoDB Local accepts any; botocore needs some to sign.
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        os.environ.setdefault(name, "bench")


def measure_check(
    endpoint: str | None, check: str, history: int, due: int = DUE, prefix: str | None = None
) -> Figures:
    """Seed one check's CRM with ``history`` handled items and ``due`` due notices; run it twice.

    ``endpoint`` None: the DynamoDB the environment points at (moto in the tests). The
    tables are ``<prefix>-applications`` and so on (a fresh prefix by default), dropped
    afterwards.
    """
    _credentials()
    prefix = prefix or f"bench-{check.split('_')[0]}-{history}-{uuid.uuid4().hex[:6]}"
    settings = _settings(endpoint, prefix)
    provision(settings, poll_seconds=0.1)
    try:
        SEEDS[check](history, due, settings)
        meter = Meter()
        events = _client().meta.events
        events.register("provide-client-params.dynamodb.*", meter.ask)
        events.register("after-call.dynamodb.*", meter.count)
        mailer = Mailer(SENDER, REGION, client=cast("SESV2Client", _AcceptingSes()))
        try:
            with _quiet():
                first = run_check(
                    check,
                    at=FIRST_RUN,
                    now=FIRST_RUN,
                    settings=settings,
                    mailer=mailer,
                    emit_metrics=False,
                )
                requests, rcu = meter.requests, meter.rcu
                meter.reset()
                run_check(
                    check, at=RERUN, now=RERUN, settings=settings, mailer=mailer, emit_metrics=False
                )
        finally:
            events.unregister("provide-client-params.dynamodb.*", meter.ask)
            events.unregister("after-call.dynamodb.*", meter.count)
        return Figures(
            history=history,
            due=first.sent,
            requests=requests,
            rcu=round(rcu, 1),
            rerun_requests=meter.requests,
            rerun_rcu=round(meter.rcu, 1),
        )
    finally:
        _drop(prefix)


def _drop(prefix: str) -> None:
    client = _client()
    for name in client.list_tables()["TableNames"]:
        if name.startswith(prefix + "-"):
            client.delete_table(TableName=name)


def measure(
    endpoint: str | None,
    checks: Iterable[str] = CHECKS,
    histories: tuple[int, int] = HISTORIES,
    due: int = DUE,
    prefix: str | None = None,
) -> ReadsBench:
    """Every check's figures at 100 and 10,000 handled items, on the DynamoDB at ``endpoint``."""
    results = []
    for check in checks:
        small, large = (
            measure_check(endpoint, check, history, due, prefix) for history in histories
        )
        results.append(CheckReads(check, small, large))
    return ReadsBench(tuple(results), histories)


def table(reads: CheckReads) -> str:
    """One check's figures as a Markdown table."""
    rows = [
        f"{reads.check}",
        "| history | due | requests | RCU | requests/notice | RCU/notice "
        "| rerun requests | rerun RCU |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for f in (reads.small, reads.large):
        rows.append(
            f"| {f.history:,} | {f.due} | {f.requests} | {f.rcu:g} | {f.requests_per_notice:.2f} "
            f"| {f.rcu_per_notice:.2f} | {f.rerun_requests} | {f.rerun_rcu:g} |"
        )
    rows.append(f"growth per notice: {reads.growth:.2f}")
    return "\n".join(rows)


def main() -> int:
    """Start DynamoDB Local, measure every check, print the tables and the worst figures."""
    with tempfile.TemporaryDirectory() as logs, running(Path(logs)) as server:
        result = measure(server.endpoint)
    for reads in result.checks:
        print(table(reads), end="\n\n")
    print(result.line())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
