"""Integration: the three Chalice functions invoked end to end through ``chalice.test.Client``.

The test client applies the ``dev`` stage's environment from ``.chalice/config.json``
while a function runs, so these tests provision the ``dev`` stage's tables and
verify the ``dev`` sender read from that file, and freeze the wall clock with
freezegun (the handlers read it for the ledger's timestamps).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import boto3
import pytest
from chalice.test import Client
from freezegun import freeze_time

from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.mailer import ses_client
from chalicelib.models import Notification, Repayment
from tests import factories
from tests.conftest import DEV_ENV
from tests.support import (
    REGION,
    Fault,
    ledger_key,
    scheduled_event,
    sent_emails,
    ses_error,
    ses_faults,
    subjects_by_recipient,
    utc,
)

pytestmark = [pytest.mark.task, pytest.mark.integration]

DEV_SENDER = DEV_ENV["SENDER_EMAIL"]

FUNCTIONS = ("check_stale_applications", "check_note_reminders", "check_repayment_reminders")
BROOKE = "brooke.davis@lender.example.com.au"
SAM = "sam.author@lender.example.com.au"
PRIYA = "priya.patel@lender.example.com.au"
BEN = "ben.lee@example.net"
UPCOMING = "Upcoming Repayment Reminder: APP-1001 due 30/11/2026"
MIA = "mia.chen@example.net"
AVA = "ava.nguyen@example.net"


def invoke(client: Client, function: str, at: datetime, *, clock: str | None = None) -> Any:
    """Invoke ``function`` for an event at ``at``, with the wall clock frozen at ``clock``."""
    with freeze_time(clock or at):
        return client.lambda_.invoke(function, scheduled_event(client, function, at)).payload


# --- each function through the Chalice test client ---------------------------------------


def test_the_note_reminder_function_sends_from_the_stage_sender(client: Client) -> None:
    # Given a note due on 23 Nov
    factories.one_of_each()

    # When EventBridge fires at 23:00 UTC on 22 Nov (10:00 on 23 Nov in Sydney)
    payload = invoke(client, "check_note_reminders", utc("2026-11-22 23:00"))

    # Then the author and the BDM are reminded, from the dev stage's sender
    assert payload["check"] == "note_reminders"
    assert payload["business_date"] == "2026-11-23"
    assert payload["acted"] is True
    assert (payload["notices_due"], payload["sent"], payload["emails_sent"]) == (2, 2, 2)
    assert (payload["failed"], payload["retrying"], payload["invalid"]) == (0, 0, 0)
    assert subjects_by_recipient() == {
        SAM: ["Note Reminder: Call the valuer"],
        BROOKE: ["Note Reminder: Call the valuer"],
    }
    for sent in sent_emails():
        # From the stage's sender, in the name of the stage's lender, replies to its address
        assert sent.message["From"].addresses[0].addr_spec == DEV_SENDER
        assert sent.message["From"].addresses[0].display_name == DEV_ENV["LENDER_NAME"]
        assert sent.message["Reply-To"].addresses[0].addr_spec == DEV_ENV["LENDER_REPLY_TO"]
        # dated by the scheduled run's time, with a Message-ID of its own on the sender's domain
        assert sent.message["Date"].datetime == utc("2026-11-22 23:00")
        assert sent.message["Message-ID"].endswith("@example.com.au>")
        assert DEV_ENV["LENDER_PHONE"] in sent.text
        assert f"ABN {DEV_ENV['LENDER_ABN']}" in sent.html
        assert "APP-1001" in sent.text
        assert "Chase the valuation report" in sent.html


def test_the_repayment_function_sends_and_sets_the_flag(client: Client) -> None:
    factories.one_of_each()

    payload = invoke(client, "check_repayment_reminders", utc("2026-11-22 23:00"))

    assert payload["check"] == "repayment_reminders"
    assert (payload["acted"], payload["sent"]) == (True, 1)
    assert subjects_by_recipient() == {BEN: [UPCOMING]}
    assert "$2,450.50" in sent_emails()[0].text
    assert "30/11/2026" in sent_emails()[0].text
    assert Repayment.get("rep-1").reminder_sent is True


def test_the_stale_application_function_alerts_the_bdm(client: Client) -> None:
    factories.one_of_each()

    payload = invoke(client, "check_stale_applications", utc("2026-11-22 23:00"))

    assert payload["check"] == "stale_applications"
    assert (payload["acted"], payload["sent"], payload["items_read"]) == (True, 1, 1)
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}
    assert "APP-1001: Valuation Ordered, 21 days in stage" in sent_emails()[0].text


def test_the_functions_use_the_dev_stage_tables(client: Client, dev_stage: Settings) -> None:
    # Given a note in the dev stage's notes table
    factories.one_of_each()

    # When the function runs
    invoke(client, "check_note_reminders", utc("2026-11-22 23:00"))

    # Then its ledger entry is in the dev stage's notifications table
    item = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=dev_stage.tables.notifications,
        Key={"id": {"S": ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2")}},
    )
    assert item["Item"]["status"] == {"S": "sent"}
    assert dev_stage.tables.notifications == DEV_ENV["NOTIFICATIONS_TABLE"]


def test_the_event_time_sets_the_business_date_and_the_wall_clock_the_timestamps(
    client: Client,
) -> None:
    # Given a note due on 23 Nov
    factories.one_of_each()

    # When the 23:00 UTC event (10:00 on 23 Nov in Sydney) is handled four hours late
    payload = invoke(
        client, "check_note_reminders", utc("2026-11-22 23:00"), clock="2026-11-23T03:07:00Z"
    )

    # Then 23 Nov is still the business date, and the ledger records the real send time
    assert payload["business_date"] == "2026-11-23"
    entry = Notification.get(ledger_key("note_reminders", "note-1", "2026-11-23", "bdm-1"))
    assert entry.status == "sent"
    assert entry.business_date == "2026-11-23"
    assert entry.sent_at == utc("2026-11-23 03:07")
    assert entry.message_id in {sent.message_id for sent in sent_emails()}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_function_invoked_outside_business_hours_does_nothing(
    client: Client, function: str
) -> None:
    # Given something due for every check
    factories.one_of_each()

    # When the function fires at 19:00 UTC (06:00 in Sydney)
    payload = invoke(client, function, utc("2026-11-22 19:00"))

    # Then it reports that it did not act, and sends nothing
    assert payload["acted"] is False
    assert payload["business_date"] == "2026-11-23"
    assert (payload["items_read"], payload["sent"]) == (0, 0)
    assert sent_emails() == []
    assert Repayment.get("rep-1").reminder_sent is None


def test_a_redelivered_event_sends_nothing_twice(client: Client) -> None:
    factories.one_of_each()
    first = invoke(client, "check_note_reminders", utc("2026-11-22 23:00"))

    again = invoke(
        client, "check_note_reminders", utc("2026-11-22 23:00"), clock="2026-11-22T23:01:00Z"
    )

    assert (first["sent"], again["sent"], again["items_read"]) == (2, 0, 0)
    assert len(sent_emails()) == 2


# --- failures ----------------------------------------------------------------------------


def test_a_transient_ses_failure_fails_the_invocation_so_lambda_retries(client: Client) -> None:
    # Given two borrowers due an upcoming reminder, and SES throttling one of them
    factories.crm(borrowers=2)
    factories.application(borrower_ids=["bor-1", "bor-2"])
    factories.repayment(due_date="2026-11-30")
    shared = ses_client(REGION)  # the client the deployed function sends through

    def throttle_ben(recipient: str) -> Fault:
        return ses_error("TooManyRequestsException", 429) if recipient == BEN else None

    # When the function runs, the Client propagates the handler's exception
    with (
        ses_faults(shared, throttle_ben) as attempted,
        pytest.raises(DeliveryIncomplete, match=r"1 notice\(s\) not sent") as raised,
    ):
        invoke(client, "check_repayment_reminders", utc("2026-11-22 23:00"))

    # Then the other borrower got theirs, Ben's stays due and the flag stays unset
    assert sorted(attempted) == [BEN, MIA]
    assert raised.value.summary.sent == 1
    assert raised.value.summary.retrying == 1
    assert "TooManyRequestsException" in str(raised.value)
    assert subjects_by_recipient() == {MIA: [UPCOMING]}
    assert Repayment.get("rep-1").reminder_sent is None
    pending = Notification.get(ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1"))
    assert pending.status == "pending"
    assert "TooManyRequestsException" in pending.last_error

    # When Lambda retries the same event and SES has recovered
    retry = invoke(
        client, "check_repayment_reminders", utc("2026-11-22 23:00"), clock="2026-11-22T23:01:00Z"
    )

    # Then only Ben's reminder goes out, and the repayment is flagged
    assert (retry["sent"], retry["skipped"], retry["retrying"]) == (1, 1, 0)
    assert subjects_by_recipient() == {MIA: [UPCOMING], BEN: [UPCOMING]}
    assert Repayment.get("rep-1").reminder_sent is True
    entry = Notification.get(ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1"))
    assert (entry.status, entry.attempts) == ("sent", 2)


def test_an_event_without_a_time_fails_clearly(client: Client) -> None:
    factories.one_of_each()
    event = scheduled_event(client, "check_note_reminders", utc("2026-11-22 23:00"))
    del event["time"]

    # Chalice's CloudWatchEvent refuses it before the check runs.
    with freeze_time("2026-11-22T23:00:00Z"), pytest.raises(KeyError, match="time"):
        client.lambda_.invoke("check_note_reminders", event)

    assert sent_emails() == []


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "scheduled event has no 'time' field"),
        ("tomorrow morning", "scheduled event time 'tomorrow morning' is not ISO-8601"),
    ],
)
def test_an_event_with_an_unusable_time_fails_clearly(
    client: Client, value: str | None, message: str
) -> None:
    factories.one_of_each()
    event = scheduled_event(client, "check_note_reminders", utc("2026-11-22 23:00"))
    event["time"] = value

    with freeze_time("2026-11-22T23:00:00Z"), pytest.raises(ValueError, match=message):
        client.lambda_.invoke("check_note_reminders", event)

    assert sent_emails() == []


def test_an_unknown_function_name_is_refused(client: Client) -> None:
    from chalice.test import FunctionNotFoundError

    with pytest.raises(FunctionNotFoundError):
        client.lambda_.invoke("check_birthdays", {})


# --- end to end --------------------------------------------------------------------------


# Long because it is data: every item of the small CRM, read against the expected emails below.
def small_crm() -> None:
    """Two BDMs, a note author, three borrowers, four applications, notes and repayments."""
    factories.crm(borrowers=3)
    factories.staff("bdm-2", "Priya Patel", PRIYA)
    factories.application(
        "app-1",
        reference_number="APP-1001",
        stage="valuation_ordered",
        stage_last_updated="2026-11-02T10:00:00+11:00",  # 21 days: stale
        bd_id="bdm-1",
        borrower_ids=["bor-1", "bor-2"],
    )
    factories.application(
        "app-2",
        reference_number="APP-1002",
        stage="iloo_issued",
        stage_last_updated="2026-11-09T09:00:00+11:00",  # 14 days: stale
        bd_id="bdm-1",
        borrower_ids=["bor-3"],
    )
    factories.application(
        "app-3",
        reference_number="APP-1003",
        stage="settled",
        stage_last_updated="2026-06-01T10:00:00+10:00",  # terminal: never stale
        bd_id="bdm-2",
    )
    factories.application(
        "app-4",
        reference_number="APP-1004",
        stage="formal_approval",
        stage_last_updated="2026-11-20T15:00:00+11:00",  # 3 days: fresh
        bd_id="bdm-2",
        borrower_ids=["bor-3"],
    )
    factories.note("note-1", title="Call the valuer", remind_date="2026-11-23")
    factories.note(
        "note-2",
        title="Check approval conditions",
        application_id="app-4",
        created_by="bdm-2",
        remind_date="2026-11-21",  # two days ago, never reminded: catch-up
    )
    factories.note("note-3", title="Next week", remind_date="2026-11-24")
    factories.repayment("rep-1", application_id="app-1", due_date="2026-11-30")  # upcoming
    factories.repayment("rep-2", application_id="app-2", due_date="2026-11-20")  # 3 days late
    factories.repayment("rep-3", application_id="app-2", due_date="2026-11-16")  # 7 days late
    factories.repayment("rep-4", application_id="app-4", due_date="2026-11-13")  # 10 days late
    factories.repayment(
        "rep-5", application_id="app-1", due_date="2026-11-20", paid_date="2026-11-19"
    )


# Long because its Then lists every email of the small CRM, one line each.
def test_all_three_functions_at_noon_send_the_full_set_of_notices(client: Client) -> None:
    # Given a small CRM
    small_crm()
    noon = utc("2026-11-23 01:00")  # 12:00 AEDT on 23 Nov

    # When EventBridge fires all three functions at 12:00 Sydney time
    payloads = {function: invoke(client, function, noon) for function in FUNCTIONS}

    # Then every person gets exactly their notices
    assert {f: p["business_date"] for f, p in payloads.items()} == dict.fromkeys(
        FUNCTIONS, "2026-11-23"
    )
    assert {f: p["sent"] for f, p in payloads.items()} == {
        "check_stale_applications": 2,  # two applications in one digest
        "check_note_reminders": 3,
        "check_repayment_reminders": 5,
    }
    assert all(p["invalid"] == p["failed"] == p["retrying"] == 0 for p in payloads.values())
    assert {r: sorted(s) for r, s in subjects_by_recipient().items()} == {
        BROOKE: ["Note Reminder: Call the valuer", "Stale Application Alert: 2 applications"],
        SAM: ["Note Reminder: Call the valuer"],
        PRIYA: [
            "ESCALATION: 10 Days Overdue Repayment: APP-1004",
            "Note Reminder: Check approval conditions",
        ],
        BEN: [UPCOMING],
        MIA: [UPCOMING],
        AVA: [
            "OVERDUE Repayment Notice: APP-1002, 3 days overdue",
            "URGENT: 7 Days OVERDUE Repayment: APP-1002",
        ],
    }
    assert all(len(sent.recipients) == 1 for sent in sent_emails())
    escalation = next(s for s in sent_emails() if s.subject.startswith("ESCALATION"))
    assert "APP-1004" in escalation.text
    assert "Ava Nguyen" in escalation.text
    digest = next(s for s in sent_emails() if s.subject.startswith("Stale"))
    assert "APP-1001" in digest.text
    assert "APP-1002" in digest.text
    assert "APP-1003" not in digest.text
    assert "APP-1004" not in digest.text
    flags = {
        rep: (
            Repayment.get(rep).reminder_sent,
            Repayment.get(rep).overdue_3_day_sent,
            Repayment.get(rep).overdue_7_day_sent,
            Repayment.get(rep).overdue_10_day_sent,
        )
        for rep in ("rep-1", "rep-2", "rep-3", "rep-4", "rep-5")
    }
    assert flags == {
        "rep-1": (True, None, None, None),
        "rep-2": (None, True, None, None),
        "rep-3": (None, None, True, None),
        "rep-4": (None, None, None, True),
        "rep-5": (None, None, None, None),
    }

    # When they all fire again an hour later
    again = {function: invoke(client, function, utc("2026-11-23 02:00")) for function in FUNCTIONS}

    # Then nothing new goes out
    assert {f: p["sent"] for f, p in again.items()} == dict.fromkeys(FUNCTIONS, 0)
    assert len(sent_emails()) == 9
