"""Reads follow the notices due, not the history: request patterns pinned as counts.

A check's already-handled items must cost nothing on a rerun and nothing per due
notice: the same requests are made with a little history and with ten times more.
Counts only (``tests/aws_recorder.py``); the 100 -> 10,000 growth and the capacity
are measured on DynamoDB Local by ``ops/bench_reads.py``.
"""

from __future__ import annotations

import json
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import boto3
import pytest
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import schedule
from chalicelib.checks import note_reminders
from chalicelib.config import Settings
from chalicelib.models import NOTES_PENDING, Application, Note, Notification, Repayment, Staff
from tests import factories as f
from tests.aws_recorder import AwsCall, another_actor
from tests.support import (
    REGION,
    Answer,
    ledger_key,
    run,
    sent_emails,
    ses_error,
    ses_faults,
    sydney,
)

pytestmark = [pytest.mark.task, pytest.mark.execution]

MONDAY = sydney("2026-11-23 12:00")
TUESDAY = sydney("2026-11-24 12:00")
# 322 days before Monday: day 322 = 14 + 44 cycles of 7, so Monday is an alert day
# and Tuesday is not.
LONG_AGO = "2026-01-05T10:00:00+11:00"


def requests(calls: list[AwsCall]) -> Counter[tuple[str, str]]:
    """``(operation, table or index)`` -> how many DynamoDB requests."""
    return Counter(
        (c.operation, c.params.get("IndexName") or c.params.get("TableName") or table)
        for c in calls
        for table in c.params.get("RequestItems") or [""]
        if c.service == "dynamodb"
    )


def long_stale_applications(count: int) -> None:
    """``count`` applications in one stage since 05/01, of two BDMs."""
    with Staff.batch_write() as staff:
        for n in range(2):
            staff.save(Staff(id=f"bdm-{n}", name=f"BDM {n}", email=f"bdm{n}@lender.example.com"))
    with Application.batch_write() as apps:
        for n in range(count):
            apps.save(
                Application(
                    id=f"old-{n}",
                    reference_number=f"OLD-{n:04d}",
                    stage="valuation_ordered",
                    stage_last_updated=LONG_AGO,
                    loan_amount=500_000,
                    bd_id=f"bdm-{n % 2}",
                )
            )


def calls_since(aws_calls: Callable[[], list[AwsCall]], before: int) -> list[AwsCall]:
    return aws_calls()[before:]


@pytest.mark.parametrize("history", [3, 30])
def test_a_stale_rerun_makes_two_requests_whatever_the_alerted_history(
    service: Settings,
    ses: SESV2Client,
    aws_calls: Callable[[], list[AwsCall]],
    history: int,
) -> None:
    # Given long-stale applications alerted by Monday's 12:00 run
    long_stale_applications(history)
    first = run("stale_applications", MONDAY, ses)
    assert first.sent == history

    # When the check runs again an hour later, with nothing new due
    before = len(aws_calls())
    again = run("stale_applications", MONDAY + timedelta(hours=1), ses)

    # Then it reads its sweep record and its schedule, and nothing else
    assert requests(calls_since(aws_calls, before)) == {
        ("BatchGetItem", "test-notifications"): 1,
        ("Query", "due_check-due_on-index"): 1,
    }
    assert (again.items_read, again.notices_due, again.sent) == (0, 0, 0)
    assert len(sent_emails()) == 2  # one digest per BDM


@pytest.mark.parametrize("history", [3, 30])
def test_the_next_days_first_run_reads_the_newly_stale_not_the_alerted_history(
    service: Settings,
    ses: SESV2Client,
    aws_calls: Callable[[], list[AwsCall]],
    history: int,
) -> None:
    # Given long-stale applications alerted on Monday, not due again until next Monday
    long_stale_applications(history)
    run("stale_applications", MONDAY, ses)
    # and one application whose 14th day in its stage is Tuesday
    f.application(
        "new-1",
        reference_number="NEW-0001",
        stage_last_updated="2026-11-10T09:00:00+11:00",
        bd_id="bdm-0",
    )

    # When Tuesday's first run goes
    before = len(aws_calls())
    summary = run("stale_applications", TUESDAY, ses)

    # Then it read the new one only, and alerted it
    assert (summary.items_read, summary.sent) == (1, 1)
    assert sent_emails()[-1].subject == "Stale Application Alert: NEW-0001"
    # with the same requests whatever the history: the sweep record, one Query per
    # active stage from where Monday's sweep stopped, the schedule, the BDM, the
    # ledger, the suppression list, claim and sent, the new schedule entry, the sweep
    assert requests(calls_since(aws_calls, before)) == {
        ("BatchGetItem", "test-notifications"): 3,
        ("Query", "stage-stage_last_updated-index"): 15,
        ("Query", "due_check-due_on-index"): 1,
        ("BatchGetItem", "test-staff"): 1,
        ("UpdateItem", "test-notifications"): 4,
    }


def test_an_alert_sent_late_is_followed_by_the_next_cycles_on_time(
    service: Settings, ses: SESV2Client
) -> None:
    # Given an application whose 14th day was Monday, and no run until Wednesday (day 16)
    f.crm()
    f.application(stage_last_updated="2026-11-09T10:00:00+11:00")
    run("stale_applications", sydney("2026-11-25 12:00"), ses)
    assert "16 days in stage" in sent_emails()[0].text

    # When the check runs every day until day 21
    for day in range(26, 31):
        run("stale_applications", sydney(f"2026-11-{day} 12:00"), ses)

    # Then the second alert goes out on day 21 (30/11), not 7 days after the late one
    assert len(sent_emails()) == 2
    assert "21 days in stage" in sent_emails()[1].text


def test_a_stale_application_fixed_in_the_crm_is_alerted_at_the_next_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a stale application without a BDM, reported at 12:00
    f.crm()
    f.application(bd_id=None)
    first = run("stale_applications", MONDAY, ses)
    assert [i["reason"] for i in first.invalid_items] == ["bd_id is missing"]

    # When the CRM gives it its BDM before 13:00
    f.application()
    run("stale_applications", MONDAY + timedelta(hours=1), ses)

    # Then the 13:00 run alerts the BDM
    [sent] = sent_emails()
    assert sent.subject == "Stale Application Alert: APP-1001"


def test_an_application_that_settled_leaves_the_schedule(
    service: Settings, ses: SESV2Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    # Given an application alerted on Monday that settled before its next cycle
    f.crm()
    f.application(stage_last_updated=LONG_AGO)
    run("stale_applications", MONDAY, ses)
    f.application(stage="settled")

    # When the check runs on the day it would have been due again, and the day after
    run("stale_applications", sydney("2026-11-30 12:00"), ses)
    before = len(aws_calls())
    later = run("stale_applications", sydney("2026-11-30 13:00"), ses)

    # Then nothing was sent and it is no longer read
    assert len(sent_emails()) == 1
    assert later.items_read == 0
    assert requests(calls_since(aws_calls, before))[("BatchGetItem", "test-applications")] == 0


def staff_keys_read(calls: list[AwsCall]) -> list[list[str]]:
    """The staff ids of each BatchGetItem of the staff table, request by request."""
    return [
        sorted(key["id"]["S"] for key in c.params["RequestItems"][table]["Keys"])
        for c in calls
        if c.operation == "BatchGetItem"
        for table in c.params["RequestItems"]
        if table == "test-staff"
    ]


def test_a_repayment_run_reads_each_escalated_bdm_once_and_no_staff_for_borrowers(
    service: Settings, ses: SESV2Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    # Given three repayments 10 days overdue (escalations to Brooke) on app-1 and app-2,
    # and app-3's repayment due in 2 days (an upcoming reminder to its borrower)
    f.crm()
    for n in (1, 2, 3):
        f.application(f"app-{n}", reference_number=f"APP-100{n}")
    f.repayment("rep-1", application_id="app-1", due_date="2026-11-13")
    f.repayment("rep-2", application_id="app-1", due_date="2026-11-13")
    f.repayment("rep-3", application_id="app-2", due_date="2026-11-13")
    f.repayment("rep-4", application_id="app-3", due_date="2026-11-25")

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then the BDM was read once, for the escalations only
    assert summary.sent == 4
    assert staff_keys_read(aws_calls()) == [["bdm-1"]]


def test_a_repayment_run_with_borrower_notices_only_reads_no_staff(
    service: Settings, ses: SESV2Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    # Given only an upcoming reminder due
    f.crm()
    f.application()
    f.repayment(due_date="2026-11-25")

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then its borrower was reminded and no staff member was read
    assert summary.sent == 1
    assert staff_keys_read(aws_calls()) == []


@pytest.mark.parametrize("history", [3, 30])
def test_a_repayment_rerun_makes_one_query_whatever_the_notified_history(
    service: Settings,
    ses: SESV2Client,
    aws_calls: Callable[[], list[AwsCall]],
    history: int,
) -> None:
    # Given repayments in every notice window (upcoming, overdue, urgent, escalation)
    # notified at 12:00
    f.crm()
    f.application()
    windows = ("2026-11-25", "2026-11-19", "2026-11-15", "2026-11-12")
    for n in range(history):
        f.repayment(f"rep-{n}", due_date=windows[n % len(windows)])
    first = run("repayment_reminders", MONDAY, ses)
    assert first.sent == history

    # When the check runs again an hour later
    before = len(aws_calls())
    again = run("repayment_reminders", MONDAY + timedelta(hours=1), ses)

    # Then it makes one Query of the pending index, which finds none of them (each waits
    # for the day its next notice is due, or left the index after its escalation)
    assert (again.items_read, again.notices_due, again.sent) == (0, 0, 0)
    assert requests(calls_since(aws_calls, before)) == {
        ("Query", "pending_check-next_notice_on-index"): 1,
    }


def test_a_repayment_moved_to_its_next_notice_is_read_on_that_day_and_notified(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1, due Wed 25/11, reminded (upcoming) on Monday
    f.crm()
    f.application()
    f.repayment(due_date="2026-11-25")
    assert run("repayment_reminders", MONDAY, ses).sent == 1
    assert Repayment.get("rep-1").next_notice_on == "2026-11-28"

    # When the check runs every day up to the first overdue day, Sat 28/11
    days = [run("repayment_reminders", MONDAY + timedelta(days=d), ses) for d in range(1, 6)]

    # Then only Saturday's run read it, and sent the overdue notice
    assert [d.items_read for d in days] == [0, 0, 0, 0, 1]
    assert [e.subject for e in sent_emails()] == [
        "Upcoming Repayment Reminder: APP-1001 due 25/11/2026",
        "OVERDUE Repayment Notice: APP-1001, 3 days overdue",
    ]
    assert Repayment.get("rep-1").next_notice_on == "2026-12-02"


def test_a_note_marked_with_a_malformed_remind_date_is_reported_and_the_run_goes_on(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 due today, and note-bad marked pending with a remind date that sorts
    # inside the window but is not a date
    f.note_for_author_and_bdm()
    f.note("note-bad", remind_date="2026-11-22x")

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then note-bad is reported by id and reason, and note-1 still goes out
    assert summary.invalid_items == [
        {"item_id": "note-bad", "reason": "remind_date '2026-11-22x' is not a YYYY-MM-DD date"}
    ]
    assert summary.sent == 2


def test_pending_notes_outside_the_catch_up_window_are_neither_read_nor_reminded(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 due today, and notes marked pending for tomorrow and for the day before
    # the three catch-up days
    f.note_for_author_and_bdm()
    f.note("note-tomorrow", remind_date="2026-11-24")
    f.note("note-too-old", remind_date="2026-11-19")

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then only note-1 was read and reminded; the others wait, still pending
    assert (summary.items_read, summary.sent, summary.invalid_items) == (1, 2, [])
    assert {pending_mark("note-tomorrow"), pending_mark("note-too-old")} == {NOTES_PENDING}


def test_settled_notes_saved_again_are_each_counted_as_due_and_skipped(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 and note-2 reminded at 12:00 to Sam and Brooke, then both saved again by
    # the CRM with the same remind date (marked pending again)
    f.note_for_author_and_bdm()
    f.note("note-2")
    assert run("note_reminders", MONDAY, ses).sent == 4
    f.note("note-1")
    f.note("note-2")

    # When the check runs again an hour later
    again = run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then both notes' reminders are counted: due, and skipped as settled
    assert (again.notices_due, again.skipped, again.sent) == (4, 4, 0)


def settled_record(note_id: str, remind_date: str) -> tuple[str, str]:
    """The record of settled notes ``note_id`` goes in, and its element there once its
    reminders to its author and its application's BDM went out."""
    note = Note.get(note_id)
    application = Application.get(note.application_id)
    return note_reminders.settled_element(
        note_id, date.fromisoformat(remind_date), note.created_by, application.bd_id, 2
    )


def test_an_element_of_a_record_of_settled_notes_this_version_cannot_read_is_passed_over(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 due today, and its record of settled notes holding an element that is
    # not (note, author, BDM, count): from another version, or damaged
    f.note_for_author_and_bdm()
    record, _ = settled_record("note-1", "2026-11-23")
    schedule.add_to_set(record, {"note-1", "note-1#staff-2"})

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then note-1 is not taken for settled: its reminders go out
    assert (summary.sent, summary.skipped, summary.errors) == (2, 0, [])


def test_a_record_of_settled_notes_is_not_written_when_its_elements_reach_the_cap(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a note with a long id due on Saturday and note-1 due today, and the records'
    # cap exactly the length of the long note's element
    f.note_for_author_and_bdm()
    f.note("note-with-a-long-id-" + "x" * 40, remind_date="2026-11-21")
    long_record, long_element = settled_record("note-with-a-long-id-" + "x" * 40, "2026-11-21")
    short_record, short_element = settled_record("note-1", "2026-11-23")
    assert len(short_element) < len(long_element)
    monkeypatch.setattr(note_reminders, "MAX_RECORDED_CHARS", len(long_element))

    # When the note check runs (Saturday's note first: the index is read in date order)
    assert run("note_reminders", MONDAY, ses).sent == 4

    # Then Saturday's record is left unwritten (that note is read the longer way next
    # run), and today's, under the cap, is written all the same
    assert schedule.string_sets([long_record, short_record]) == {short_record: {short_element}}


@pytest.mark.parametrize("history", [3, 30])
def test_a_note_rerun_reads_no_people_and_no_ledger_for_reminded_notes(
    service: Settings,
    ses: SESV2Client,
    aws_calls: Callable[[], list[AwsCall]],
    history: int,
) -> None:
    # Given notes on app-1 reminded at 12:00 to their author Sam and the BDM Brooke
    f.crm()
    f.application()
    for n in range(history):
        f.note(f"note-{n}")
    first = run("note_reminders", MONDAY, ses)
    assert first.sent == 2 * history

    # When the check runs again an hour later
    before = len(aws_calls())
    again = run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then it makes one Query of the pending index, which finds none of them (settled
    # notes left it): no note, application, staff or ledger entry read, nothing written
    assert (again.items_read, again.notices_due, again.sent) == (0, 0, 0)
    assert requests(calls_since(aws_calls, before)) == {
        ("Query", "pending_check-remind_date-index"): 1,
    }


def pending_mark(note_id: str) -> str | None:
    """The note's ``pending_check`` as stored (None: out of the pending index)."""
    mark: str | None = Note.get(note_id, consistent_read=True).attribute_values.get("pending_check")
    return mark


def test_a_settled_note_whose_id_holds_hash_and_percent_is_recognised_as_settled(
    service: Settings, ses: SESV2Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    # Given note "n#1%" (its id escaped in the record of settled notes) reminded at 12:00
    # to Sam and Brooke, then saved again by the CRM with the same remind date (marked
    # pending again)
    f.crm()
    f.application()
    f.note("n#1%")
    first = run("note_reminders", MONDAY, ses)
    assert first.sent == 2
    f.note("n#1%")

    # When the check runs again an hour later
    before = len(aws_calls())
    again = run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then the record names it: counted as due and skipped without reading its people or
    # ledger entries (the one ledger-table read is of the records), and it leaves the
    # pending index again
    assert (again.notices_due, again.skipped, again.sent) == (2, 2, 0)
    assert requests(calls_since(aws_calls, before)) == {
        ("Query", "pending_check-remind_date-index"): 1,
        ("BatchGetItem", "test-applications"): 1,
        ("BatchGetItem", "test-notifications"): 1,
        ("UpdateItem", "test-notes"): 1,
    }
    assert pending_mark("n#1%") is None
    assert len(sent_emails()) == 2


@pytest.mark.parametrize(
    ("note", "application"),
    [
        ({"application_id": None}, {}),
        ({}, {"bd_id": None}),
        ({"created_by": None}, {}),
    ],
    ids=["no-application", "no-bdm", "no-author"],
)
def test_a_settled_note_missing_a_person_is_recognised_as_settled(
    service: Settings,
    ses: SESV2Client,
    aws_calls: Callable[[], list[AwsCall]],
    note: dict[str, object],
    application: dict[str, object],
) -> None:
    # Given note-1, missing its application, its BDM or its author, reminded at 12:00 to
    # the one person it has, then saved again by the CRM (marked pending again)
    f.crm()
    f.application("app-1", **application)
    f.note("note-1", **note)
    first = run("note_reminders", MONDAY, ses)
    assert first.sent == 1
    f.note("note-1", **note)

    # When the check runs again an hour later
    before = len(aws_calls())
    again = run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then the record of settled notes names it (its missing person as such): skipped
    # without reading its people or its ledger entries, and it leaves the pending index
    assert (again.notices_due, again.skipped, again.sent) == (1, 1, 0)
    reads = requests(calls_since(aws_calls, before))
    assert ("BatchGetItem", "test-staff") not in reads
    assert reads[("BatchGetItem", "test-notifications")] == 1
    assert pending_mark("note-1") is None
    assert len(sent_emails()) == 1


def test_a_bdm_given_the_application_after_its_notes_reminder_is_reminded_too(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 reminded at 12:00 to Sam and Brooke
    f.crm()
    f.staff("bdm-2", "Omar Khan", "omar.khan@lender.example.com.au")
    f.application()
    f.note()
    run("note_reminders", MONDAY, ses)

    # When the application is given to Omar before 13:00 (the CRM marks its notes
    # pending again, as crm_mirror does when it writes an application)
    f.application(bd_id="bdm-2")
    f.note()
    run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then Omar is reminded at 13:00, and Sam and Brooke not again
    assert [e.recipients for e in sent_emails()][-1] == ["omar.khan@lender.example.com.au"]
    assert len(sent_emails()) == 3


@contextmanager
def records_of_settled_notes_refused() -> Iterator[None]:
    """DynamoDB refuses every addition to the records of settled notes, as when one is
    over 400 KB; every other write goes through."""
    client = Notification._get_connection().connection.client

    def refuse(params: dict[str, Any], **_: object) -> Answer | None:
        names = json.loads(params["body"]).get("ExpressionAttributeNames", {})
        if "done_notes" not in names.values():
            return None
        return ses_error("ValidationException", message="Item size has exceeded the maximum")

    # botocore-stubs type every handler as returning None; a before-call handler's answer
    # replaces the call.
    client.meta.events.register_first("before-call.dynamodb.UpdateItem", refuse)  # type: ignore[arg-type]
    try:
        yield
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", refuse)  # type: ignore[arg-type]


def test_a_record_of_settled_notes_that_cannot_be_written_only_means_the_longer_way(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given DynamoDB refuses to add to the records of settled notes (one is over 400 KB)
    f.note_for_author_and_bdm()
    with records_of_settled_notes_refused():
        # When the note check runs, then again an hour later
        first = run("note_reminders", MONDAY, ses)
        again = run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then both reminders went out once, and the rerun did not read the note again (it
    # left the pending index all the same)
    assert (first.sent, first.errors) == (2, [])
    assert (again.sent, again.items_read) == (0, 0)
    assert len(sent_emails()) == 2
    # and each run that tried to record the note logged why the next one reads more
    logged = [line for line in stdout_json() if line.get("message") == "settled notes not recorded"]
    assert [line["error"] for line in logged] == ["UpdateError"]
    # naming the check and the record: note-1's shard of the day's records of settled notes
    [line] = logged
    shard = zlib.crc32(b"note-1") % 16
    assert (line["check"], line["key"]) == (
        "note_reminders",
        f"done#note_reminders#2026-11-23#{shard}",
    )


def test_a_note_saved_again_after_its_reminders_went_out_unrecorded_is_settled_by_its_ledger(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 reminded at 12:00 while its record of settled notes could not be
    # written, then saved again by the CRM (marked pending again, and in no record)
    f.note_for_author_and_bdm()
    with records_of_settled_notes_refused():
        assert run("note_reminders", MONDAY, ses).sent == 2
    f.note("note-1")

    # When the check runs at 13:00 and reads it again, the longer way
    again = run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then its ledger says both reminders were sent: nothing goes out, and the note is
    # settled (out of the pending index) rather than read again at every run
    assert (again.items_read, again.notices_due, again.skipped, again.sent) == (1, 2, 2, 0)
    assert len(sent_emails()) == 2
    assert pending_mark("note-1") is None


def test_a_settled_note_whose_remind_date_the_crm_changed_during_the_run_stays_pending(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given note-1 due today, whose remind date the CRM moves to Wednesday while its
    # reminders are being sent
    f.note_for_author_and_bdm()

    def crm_moves_note_1(to: str) -> None:
        with another_actor():
            f.note(remind_date="2026-11-25")

    # When the note check runs
    with ses_faults(ses, crm_moves_note_1):
        summary = run("note_reminders", MONDAY, ses)

    # Then today's reminders went out, and the note keeps the CRM's date and its pending
    # mark, so Wednesday's reminders are not lost
    assert summary.sent == 2
    note = Note.get("note-1", consistent_read=True)
    assert (note.remind_date, pending_mark("note-1")) == ("2026-11-25", NOTES_PENDING)
    # and the note left pending is logged with what an operator needs
    [line] = [x for x in stdout_json() if x.get("message") == "settled note left pending"]
    assert (line["level"], line["check"], line["item_id"], line["error"]) == (
        "INFO",
        "note_reminders",
        "note-1",
        "UpdateError",
    )


def test_a_dry_run_leaves_the_days_sweep_and_schedule_to_the_real_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given an application whose 14th day in its stage is today
    f.crm()
    f.application(stage_last_updated="2026-11-09T10:00:00+11:00")

    # When an operator dry-runs the check at 11:00, and the scheduled run goes at 12:00
    dry = run("stale_applications", MONDAY - timedelta(hours=1), dry_run=True)
    real = run("stale_applications", MONDAY, ses)

    # Then the dry run listed the alert and the real run still found and sent it
    assert [w["subject"] for w in dry.would_send] == ["Stale Application Alert: APP-1001"]
    assert real.sent == 1
    assert [e.subject for e in sent_emails()] == ["Stale Application Alert: APP-1001"]


def stale_look_due_on(app_id: str = "app-1") -> str | None:
    """The day the stale check's schedule next reads ``app_id`` (None: off the schedule)."""
    # Read raw: a schedule entry holds none of a notice's attributes.
    found = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=Notification.Meta.table_name,
        Key={"id": {"S": schedule.key("stale_applications", app_id)}},
        ConsistentRead=True,
    )
    item = found.get("Item")
    return None if item is None else item.get("due_on", {}).get("S")


def test_an_alerted_application_whose_stage_changed_is_next_read_when_it_becomes_stale(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1 alerted on Monday (next due on 30/11), whose stage the CRM then
    # changed on Wednesday 25/11
    f.crm()
    f.application(stage_last_updated=LONG_AGO)
    run("stale_applications", MONDAY, ses)
    assert stale_look_due_on() == "2026-11-30"
    f.application(stage="valuation_received", stage_last_updated="2026-11-25T10:00:00+11:00")

    # When the check reads it on 30/11, the day the schedule had it due
    summary = run("stale_applications", sydney("2026-11-30 12:00"), ses)

    # Then nothing is sent and it is next read on 09/12, its 14th day in the new stage
    assert (summary.items_read, summary.sent) == (1, 0)
    assert stale_look_due_on() == "2026-12-09"


def test_a_due_application_not_alerted_stays_due_from_the_day_it_was_due(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1 alerted on Monday (next due on 30/11), whose BDM the CRM then removed
    f.crm()
    f.application(stage_last_updated=LONG_AGO)
    run("stale_applications", MONDAY, ses)
    f.application(stage_last_updated=LONG_AGO, bd_id=None)

    # When the check next runs on 01/12, after the day it was due
    summary = run("stale_applications", sydney("2026-12-01 12:00"), ses)

    # Then it is reported, and its schedule entry is left as it was: due since 30/11
    assert [i["item_id"] for i in summary.invalid_items] == ["app-1"]
    assert stale_look_due_on() == "2026-11-30"


def test_a_due_application_with_an_unusable_stage_timestamp_stays_due_and_is_reported(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1 alerted on Monday (next due on 30/11), whose stage_last_updated the CRM
    # then overwrote with a value that is not a timestamp
    f.crm()
    f.application(stage_last_updated=LONG_AGO)
    run("stale_applications", MONDAY, ses)
    f.application(stage_last_updated="last week")

    # When the check next runs on 01/12, and again on 02/12
    first = run("stale_applications", sydney("2026-12-01 12:00"), ses)
    due_on = stale_look_due_on()
    second = run("stale_applications", sydney("2026-12-02 12:00"), ses)

    # Then both runs report it (it stays due, its entry as it was) and nothing is sent
    assert [i["item_id"] for i in first.invalid_items] == ["app-1"]
    assert due_on == "2026-11-30"
    assert [i["item_id"] for i in second.invalid_items] == ["app-1"]
    assert len(sent_emails()) == 1


def test_a_newly_found_application_with_an_unusable_stage_timestamp_is_read_again_next_day(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1 changed stage at an impossible hour long ago (found by Monday's sweep)
    f.crm()
    f.application(stage_last_updated="2026-01-05T99:00:00+11:00")

    # When the check runs on Monday, and on Tuesday (whose sweep starts past app-1)
    monday = run("stale_applications", MONDAY, ses)
    tuesday = run("stale_applications", TUESDAY, ses)

    # Then both runs report it: Monday's put it on the schedule, due at every run
    assert [i["item_id"] for i in monday.invalid_items] == ["app-1"]
    assert [i["item_id"] for i in tuesday.invalid_items] == ["app-1"]
    assert stale_look_due_on() == "2026-11-23"
    assert sent_emails() == []


def test_an_application_stale_tomorrow_is_left_to_tomorrows_sweep_not_put_on_the_schedule(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1 in its stage since 10/11: found by Monday's sweep (two days of slack),
    # but stale only from Tuesday
    f.crm()
    f.application(stage_last_updated="2026-11-10T10:00:00+11:00")

    # When the check runs on Monday
    monday = run("stale_applications", MONDAY, ses)

    # Then nothing is sent and no schedule entry is written: Tuesday's sweep covers it
    assert (monday.items_read, monday.sent) == (1, 0)
    assert stale_look_due_on() is None

    # And Tuesday's run alerts it
    assert run("stale_applications", TUESDAY, ses).sent == 1


def unreadable_application(app_id: str, stage_key: str) -> None:
    """An application in an active stage that the model cannot read (a word as its amount)."""
    f.raw_item(
        "test-applications",
        {
            "id": {"S": app_id},
            "stage": {"S": "valuation_ordered"},
            "stage_last_updated": {"S": stage_key},
            "loan_amount": {"S": "lots"},
            "bd_id": {"S": "bdm-1"},
        },
    )


def test_an_application_on_a_sweeps_upper_bound_is_left_to_the_next_days_sweep(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1's stage timestamp is the bare date 12/11, exactly the upper bound of
    # Tuesday's sweep (Monday's stops below 11/11)
    f.crm()
    f.application(stage_last_updated="2026-11-12")
    monday = run("stale_applications", MONDAY, ses)

    # When Tuesday's run goes, then Wednesday's
    tuesday = run("stale_applications", TUESDAY, ses)
    wednesday = run("stale_applications", sydney("2026-11-25 12:00"), ses)

    # Then Tuesday's sweep excludes its bound and reads nothing; Wednesday's reads app-1
    # and reports its timestamp
    assert (monday.items_read, tuesday.items_read, tuesday.invalid_items) == (0, 0, [])
    assert wednesday.items_read == 1
    assert wednesday.invalid_items == [
        {"item_id": "app-1", "reason": "stage_last_updated '2026-11-12' has no UTC offset"}
    ]
    assert sent_emails() == []


def test_an_unreadable_application_sorted_after_one_on_the_sweeps_bound_is_reported(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1 and app-2 both carry the stage key 12/11, Tuesday's sweep bound, and
    # app-2 cannot be read (its loan amount is a word): the Query returns it after app-1
    f.crm()
    f.application(stage_last_updated="2026-11-12")
    unreadable_application("app-2", stage_key="2026-11-12")
    run("stale_applications", MONDAY, ses)

    # When Tuesday's run goes
    tuesday = run("stale_applications", TUESDAY, ses)

    # Then app-1 on the bound is left to Wednesday, but unreadable app-2 is read and reported
    assert tuesday.items_read == 1
    [reported] = tuesday.invalid_items
    assert reported["item_id"] == "app-2"
    assert reported["reason"].startswith("unreadable item:")
    assert sent_emails() == []


def test_an_unreadable_application_on_the_first_sweeps_bound_is_left_to_the_next_days_sweep(
    service: Settings, ses: SESV2Client
) -> None:
    # Given unreadable app-2 with the stage key 11/11, the bound of Monday's first sweep
    f.crm()
    unreadable_application("app-2", stage_key="2026-11-11")

    # When Monday's run goes, then Tuesday's
    monday = run("stale_applications", MONDAY, ses)
    tuesday = run("stale_applications", TUESDAY, ses)

    # Then Monday's sweep stops below its bound and reads nothing; Tuesday's reports app-2
    assert (monday.items_read, monday.invalid_items) == (0, [])
    assert [i["item_id"] for i in tuesday.invalid_items] == ["app-2"]


def test_a_raised_stale_threshold_that_closes_a_days_sweep_range_reads_nothing_that_day(
    service: Settings, ses: SESV2Client
) -> None:
    # Given Monday's run swept below 9/11 (14 days), STALE_AFTER_DAYS is then raised to
    # 17 (Tuesday's bound is 9/11 too: an empty range), and the CRM writes unreadable app-2
    # with the stage key 9/11
    f.crm()
    run("stale_applications", MONDAY, ses)
    raised = replace(service, thresholds=replace(service.thresholds, stale_after_days=17))
    unreadable_application("app-2", stage_key="2026-11-09")

    # When Tuesday's run goes, then Wednesday's
    tuesday = run("stale_applications", TUESDAY, ses, settings=raised)
    wednesday = run("stale_applications", sydney("2026-11-25 12:00"), ses, settings=raised)

    # Then Tuesday's reads nothing; Wednesday's range (from 7/11) reaches app-2 and reports it
    assert (tuesday.items_read, tuesday.invalid_items) == (0, [])
    assert [i["item_id"] for i in wednesday.invalid_items] == ["app-2"]


def test_an_application_whose_schedule_entry_cannot_be_keyed_does_not_hold_up_the_others(
    service: Settings, ses: SESV2Client
) -> None:
    # Given two stale applications, the older one with an id of 2,032 bytes: its schedule
    # entry's key would be over DynamoDB's limit, though shorter keys built from it fit
    long_id = "é" * 1016
    f.crm()
    f.application(
        long_id, reference_number="APP-LONG", stage_last_updated="2026-01-04T10:00:00+11:00"
    )
    f.application(stage_last_updated=LONG_AGO)

    # When the check runs
    run("stale_applications", MONDAY, ses)

    # Then the long one gets no schedule entry and the other is next due a week later
    # (a Scan: DynamoDB refuses even to look up a key over its limit)
    entries = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=Notification.Meta.table_name, ConsistentRead=True
    )["Items"]
    scheduled = {e["id"]["S"] for e in entries if e["id"]["S"].startswith(schedule.PREFIX)}
    assert scheduled == {schedule.key("stale_applications", "app-1")}
    assert stale_look_due_on() == "2026-11-30"


def test_forgetting_a_settled_note_deleted_in_the_crm_does_not_recreate_it(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 reminded to Sam and settled, then deleted in the CRM
    f.note_for_author_and_bdm()
    run("note_reminders", MONDAY, ses)
    Note(id="note-1").delete()

    # When an operator re-queues Sam's reminder (retry-failed forgets its settled note)
    note_reminders.forget_settled(ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2"))

    # Then no ghost note holding only a pending mark appears
    with pytest.raises(Note.DoesNotExist):
        Note.get("note-1", consistent_read=True)


@pytest.mark.parametrize(
    "key",
    [
        pytest.param("note_reminders#note-1#2026-11-23", id="too-few-parts"),
        pytest.param(
            ledger_key("repayment_upcoming", "note-1", "2026-11-23", "staff-2"),
            id="another-checks-key",
        ),
    ],
)
def test_forgetting_a_key_that_is_not_a_note_reminders_changes_nothing(
    service: Settings, ses: SESV2Client, key: str
) -> None:
    # Given note-1 reminded to Sam and Brooke at 12:00, settled and out of the pending index
    f.note_for_author_and_bdm()
    run("note_reminders", MONDAY, ses)
    assert pending_mark("note-1") is None

    # When forget_settled is given a key that is not a note reminder's
    note_reminders.forget_settled(key)

    # Then note-1 stays settled: not pending, and not read by the next run
    assert pending_mark("note-1") is None
    assert run("note_reminders", MONDAY + timedelta(hours=1), ses).items_read == 0


def test_forgetting_a_settled_note_marks_it_pending_for_the_next_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 reminded to Sam and Brooke at 12:00, settled and out of the pending index
    f.note_for_author_and_bdm()
    run("note_reminders", MONDAY, ses)

    # When an operator re-queues Sam's reminder (retry-failed forgets its settled note)
    note_reminders.forget_settled(ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2"))

    # Then note-1 is pending again and the next run reads it the longer way
    assert pending_mark("note-1") == NOTES_PENDING
    again = run("note_reminders", MONDAY + timedelta(hours=1), ses)
    assert (again.items_read, again.sent) == (1, 0)
