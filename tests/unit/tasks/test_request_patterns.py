"""Efficiency as counts, not seconds: which DynamoDB requests a run makes for many items.

No Scan anywhere, one Query per queried index key, related items and ledger entries
fetched with BatchGetItem (100 keys a request), never one GetItem per item. The
operations are recorded at botocore's boundary (``tests/aws_recorder.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from mypy_boto3_sesv2 import SESV2Client

from chalicelib.config import Settings
from chalicelib.models import NOTES_PENDING, Application, Note, Staff
from tests.aws_recorder import AwsCall
from tests.support import run, sent_emails, sydney

pytestmark = [pytest.mark.task, pytest.mark.execution]

NOTES = 120
BDMS = 12


def many_notes_due_today() -> None:
    """120 notes due today, each on its own application, by one of 12 BDMs; author = BDM."""
    with Staff.batch_write() as staff:
        for n in range(BDMS):
            staff.save(Staff(id=f"bdm-{n}", name=f"BDM {n}", email=f"bdm{n}@lender.example.com"))
    with Application.batch_write() as apps, Note.batch_write() as notes:
        for n in range(NOTES):
            apps.save(
                Application(id=f"app-{n}", reference_number=f"APP-{n:04d}", bd_id=f"bdm-{n % BDMS}")
            )
            notes.save(
                Note(
                    id=f"note-{n}",
                    title=f"Note {n}",
                    remind_date="2026-11-23",
                    application_id=f"app-{n}",
                    created_by=f"bdm-{n % BDMS}",
                    pending_check=NOTES_PENDING,
                )
            )


def operations(calls: list[AwsCall]) -> Counter[tuple[str, str]]:
    """``(operation, table or index)`` -> how many requests."""
    return Counter(
        (c.operation, c.params.get("IndexName") or c.params.get("TableName") or "")
        for c in calls
        if c.service == "dynamodb"
    )


def batch_get_tables(calls: list[AwsCall]) -> Counter[str]:
    return Counter(
        table for c in calls if c.operation == "BatchGetItem" for table in c.params["RequestItems"]
    )


def test_a_run_over_many_notes_queries_indexes_and_batches_lookups(
    service: Settings, ses: SESV2Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    # Given 120 notes due today
    many_notes_due_today()

    # When the note check runs, then runs again an hour later
    first = run("note_reminders", sydney("2026-11-23 09:00"), ses)
    first_calls = aws_calls()
    again = run("note_reminders", sydney("2026-11-23 10:00"), ses)
    again_calls = aws_calls()[len(first_calls) :]

    # Then every note was reminded once (the author is the BDM: one email each)
    assert (first.sent, again.sent, again.items_read) == (NOTES, 0, 0)
    assert len(sent_emails()) == NOTES

    # And the first run read with 1 Query (the pending notes of today and the 3 catch-up
    # days) and 7 batches: 2 of applications (120 ids), 1 of the 4 days' records of
    # settled notes (64 keys), 1 of staff (12 ids), 2 of ledger entries (120 keys) and 1
    # of the recipients' suppression entries (12 addresses)
    ops = operations(first_calls)
    assert ops[("Query", "pending_check-remind_date-index")] == 1
    assert batch_get_tables(first_calls) == {
        "test-applications": 2,
        "test-staff": 1,
        "test-notifications": 4,
    }
    # and wrote each notice twice (claim, then sent), one UpdateItem each, then the
    # settled notes into the 16 records of their day, then took each settled note out of
    # the pending index (one UpdateItem each); nothing else
    assert ops[("UpdateItem", "test-notifications")] == 2 * NOTES + 16
    assert ops[("UpdateItem", "test-notes")] == NOTES
    assert {op for op, _ in ops} == {"Query", "BatchGetItem", "UpdateItem"}

    # And the hourly rerun, with everything delivered, makes one Query that finds nothing
    rerun = operations(again_calls)
    assert rerun == {("Query", "pending_check-remind_date-index"): 1}
