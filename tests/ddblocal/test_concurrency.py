"""Overlapping runs on real DynamoDB: processes race for the same notices.

moto's in-process DynamoDB does not apply a conditional write atomically across
threads, so a race there can pass or fail falsely. Here several processes run the
same check at the same moment against DynamoDB Local, each with its own SES, and
every notice must have been sent by exactly one of them.
"""

from __future__ import annotations

import multiprocessing
from collections import Counter

import pytest

from chalicelib import ledger
from chalicelib.config import Settings
from chalicelib.models import Notification
from tests import factories as f
from tests.ddblocal.racing_runs import run_once
from tests.support import sydney

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

PROCESSES = 3
NOTES = 20


def test_runs_racing_for_the_same_notices_send_each_exactly_once(
    service: Settings, dynamodb_endpoint: str | None
) -> None:
    # Only DynamoDB Local applies a conditional write atomically (conftest collects this
    # module in the local tier alone); on moto a race here would prove nothing.
    assert dynamodb_endpoint is not None, "run with --dynamodb=local"
    # Given 20 notes due today, each to its author Sam and the BDM Brooke
    f.crm()
    f.application()
    for n in range(NOTES):
        f.note(f"note-{n}", title=f"Note {n}")
    at = sydney("2026-11-23 09:00").isoformat()

    # When three processes run the note check at the same moment
    spawn = multiprocessing.get_context("spawn")
    barrier, results = spawn.Barrier(PROCESSES), spawn.Queue()
    workers = [
        spawn.Process(
            target=run_once, args=("note_reminders", at, dynamodb_endpoint, barrier, results)
        )
        for _ in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    reports = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES

    # Then every notice went out once, from one process or another, and the ledger says so
    messages = Counter(message for report in reports for message in report["messages"])
    assert len(messages) == 2 * NOTES
    assert set(messages.values()) == {1}
    assert sum(report["sent"] for report in reports) == 2 * NOTES
    notices = [e for e in Notification.scan(consistent_read=True) if not e.id.startswith("done#")]
    assert Counter(e.status for e in notices) == {ledger.SENT: 2 * NOTES}
    # and the only other entries are that day's records of settled notes
    records = [e for e in Notification.scan(consistent_read=True) if e.id.startswith("done#")]
    assert records
    assert all(e.id.startswith("done#note_reminders#2026-11-23#") for e in records)
