"""A run's concurrent sends on real DynamoDB: exact claims, ledger and summary.

A run sends from several worker threads. moto's in-process DynamoDB does not apply a
conditional write atomically across threads, so exactness is proven here, on DynamoDB
Local (conftest collects this module in the local tier alone): within one run, and
with runs racing in separate processes, each sending concurrently.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter

import pytest
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger
from chalicelib.config import Settings
from tests import factories as f
from tests.ddblocal.racing_runs import run_once
from tests.support import SES_ACCOUNT, FakeClock, ledger_notices, run, sent_emails, sydney

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

MONDAY = sydney("2026-11-23 09:00")


def notes(count: int) -> None:
    """``count`` notes due Monday, each to its author Sam and the BDM Brooke."""
    f.crm()
    f.application()
    for n in range(count):
        f.note(f"note-{n}", title=f"Note {n}")


def statuses() -> Counter[str]:
    return Counter(str(e.status) for e in ledger_notices())


def test_a_run_sending_from_twenty_threads_claims_sends_and_counts_each_notice_once(
    service: Settings,
    ses: SESV2Client,
    dynamodb_endpoint: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert dynamodb_endpoint is not None, "run with --dynamodb=local"
    # Given 100 notes due (200 notices) and twenty sends in flight at once
    monkeypatch.setenv("SEND_CONCURRENCY", "20")
    notes(100)

    # When one run sends them
    summary = run("note_reminders", MONDAY, ses, clock=FakeClock())

    # Then each notice was claimed, sent, recorded and counted exactly once
    assert (summary.notices_due, summary.sent, summary.emails_sent) == (200, 200, 200)
    assert (summary.skipped, summary.retrying, summary.failed, summary.errors) == (0, 0, 0, [])
    messages = Counter((tuple(e.recipients), e.subject) for e in sent_emails())
    assert len(messages) == 200
    assert set(messages.values()) == {1}
    assert statuses() == {ledger.SENT: 200}


def test_a_concurrent_run_stops_exactly_at_the_24_hour_quota(
    service: Settings,
    ses: SESV2Client,
    dynamodb_endpoint: str | None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert dynamodb_endpoint is not None, "run with --dynamodb=local"
    # Given 60 notes due (120 notices), twenty sends in flight, and 45 emails of quota left
    monkeypatch.setenv("SEND_CONCURRENCY", "20")
    notes(60)
    SES_ACCOUNT.max_24_hour_send = 50_000
    SES_ACCOUNT.sent_last_24_hours = 50_000 - 45

    # When one run sends them
    summary = run("note_reminders", MONDAY, ses, clock=FakeClock())

    # Then exactly 45 went out and 75 are left due, unclaimed
    assert (summary.sent, summary.emails_sent, summary.quota_deferred) == (45, 45, 75)
    assert summary.notices_due == 120
    assert len(sent_emails()) == 45
    assert statuses() == {ledger.SENT: 45}


def test_runs_racing_while_each_sends_concurrently_send_each_notice_exactly_once(
    service: Settings, dynamodb_endpoint: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dynamodb_endpoint is not None, "run with --dynamodb=local"
    # Given 40 notes due (80 notices), and runs that send eight at a time
    monkeypatch.setenv("SEND_CONCURRENCY", "8")
    notes(40)
    at = MONDAY.isoformat()

    # When three processes run the note check at the same moment
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(3), spawn.Queue()
    workers = [
        spawn.Process(
            target=run_once, args=("note_reminders", at, dynamodb_endpoint, barrier, results)
        )
        for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=180) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]

    # Then every notice went out once, and each run's summary adds up
    messages = Counter(message for report in reports for message in report["messages"])
    assert len(messages) == 80
    assert set(messages.values()) == {1}
    assert sum(report["sent"] for report in reports) == 80
    for report in reports:
        assert report["notices_due"] == 80
        assert report["sent"] + report["skipped"] == 80
        assert report["emails_sent"] == report["sent"] == len(report["messages"])
    assert statuses() == {ledger.SENT: 80}
