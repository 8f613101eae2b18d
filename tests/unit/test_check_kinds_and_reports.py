"""What the checks write and report where no other test looked (issue 8's surviving mutants).

The ledger ``kind`` of each notice, a dry run of the stale digest, the validation
paths that skip one item and report it by id and reason (and block nothing else),
and the SES client's timeouts and retry settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC
from typing import Any

import pytest
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger, mailer, registry
from chalicelib.config import Settings
from chalicelib.models import Notification, Repayment
from chalicelib.run import RunSummary
from tests import factories as f
from tests.factories import BEN, BROOKE, MIA, SAM
from tests.support import REGION, ledger_key, run, sent_emails, subjects_by_recipient, sydney

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

STALE_DIGEST = registry.kind("stale_applications")
MONDAY = sydney("2026-11-23 12:00")
# Exactly stale_after_days (14) in its stage on MONDAY: the first alert cycle (0).
FORTNIGHT_AGO = "2026-11-09T10:00:00+11:00"
TUESDAY = sydney("2026-11-24 12:00")
FORTNIGHT_AGO_TUESDAY = "2026-11-10T10:00:00+11:00"


def stale_key(app_id: str = "app-1", changed: str = FORTNIGHT_AGO, cycle: int = 0) -> str:
    return STALE_DIGEST.key(app_id, "valuation_ordered", changed, cycle)


def entry(key: str) -> Notification:
    return Notification.get(key, consistent_read=True)


# --- the ledger kind of each notice ------------------------------------------------------


def test_a_stale_digest_is_recorded_under_the_stale_applications_kind(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1 has been in its stage for exactly the threshold
    f.crm()
    f.application(stage_last_updated=FORTNIGHT_AGO)

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then Brooke's digest is recorded under the check's kind, for app-1
    assert summary.sent == 1
    recorded = entry(stale_key())
    assert (recorded.kind, recorded.item_id, recorded.status) == (
        "stale_applications",
        "app-1",
        ledger.SENT,
    )
    assert (recorded.recipient_id, recorded.recipient_email) == ("bdm-1", BROOKE)


@pytest.mark.parametrize(
    ("due", "stage", "kind", "recipient_id", "address", "subject"),
    [
        pytest.param(
            "2026-11-30",
            "upcoming",
            "repayment_upcoming",
            "bor-1",
            BEN,
            "Upcoming Repayment Reminder: APP-1001 due 30/11/2026",
            id="upcoming",
        ),
        pytest.param(
            "2026-11-20",
            "overdue_3_day",
            "repayment_overdue_3_day",
            "bor-1",
            BEN,
            "OVERDUE Repayment Notice: APP-1001, 3 days overdue",
            id="3-day",
        ),
        pytest.param(
            "2026-11-16",
            "overdue_7_day",
            "repayment_overdue_7_day",
            "bor-1",
            BEN,
            "URGENT: 7 Days OVERDUE Repayment: APP-1001",
            id="7-day",
        ),
        pytest.param(
            "2026-11-13",
            "overdue_10_day",
            "repayment_overdue_10_day",
            "bdm-1",
            BROOKE,
            "ESCALATION: 10 Days Overdue Repayment: APP-1001",
            id="10-day",
        ),
    ],
)
def test_each_repayment_notice_is_recorded_under_its_own_kind(
    service: Settings,
    ses: SESV2Client,
    due: str,
    stage: str,
    kind: str,
    recipient_id: str,
    address: str,
    subject: str,
) -> None:
    # Given rep-1 due on ``due``
    f.crm()
    f.application()
    f.repayment(due_date=due)

    # When the repayment check runs on Monday 23/11
    run("repayment_reminders", MONDAY, ses)

    # Then the notice of that tier went out and is recorded under its kind
    assert subjects_by_recipient() == {address: [subject]}
    key = registry.kind(kind).key("rep-1", due, recipient_id)
    recorded = entry(key)
    assert (recorded.kind, recorded.item_id, recorded.recipient_id, recorded.status) == (
        kind,
        "rep-1",
        recipient_id,
        ledger.SENT,
    )


# --- a dry run of the stale digest -------------------------------------------------------


def test_a_dry_run_of_the_stale_check_lists_the_digest_and_writes_nothing(
    service: Settings, ses: SESV2Client
) -> None:
    # Given two stale applications of Brooke's
    f.crm()
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application("app-2", reference_number="APP-1002", stage_last_updated=FORTNIGHT_AGO)

    # When the stale check runs as a dry run on Tuesday
    summary = run("stale_applications", TUESDAY, dry_run=True)

    # Then it lists the one digest it would send, with both parts
    assert summary.would_send == [
        {
            "kind": "stale_applications",
            "recipient_id": "bdm-1",
            "recipient_name": "Brooke Davis",
            "recipient_email": BROOKE,
            "subject": "Stale Application Alert: 2 applications",
            "item_ids": ["app-1", "app-2"],
            "keys": [stale_key(), stale_key("app-2")],
        }
    ]
    assert (summary.notices_due, summary.sent, summary.skipped) == (2, 0, 0)
    # And sends and writes nothing
    assert sent_emails() == []
    assert ledger.lookup([stale_key(), stale_key("app-2")]) == {}


def test_a_dry_run_of_the_stale_check_skips_what_was_sent_or_is_in_flight(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1's alert went out this cycle (on Monday, day 14), another run is sending
    # app-3's right now, and app-2 became stale since (both day 14 on Tuesday)
    f.crm()
    f.application(stage_last_updated=FORTNIGHT_AGO)
    run("stale_applications", MONDAY, ses)
    f.application("app-2", reference_number="APP-1002", stage_last_updated=FORTNIGHT_AGO_TUESDAY)
    f.application("app-3", reference_number="APP-1003", stage_last_updated=FORTNIGHT_AGO_TUESDAY)
    in_flight = ledger.Claim(
        key=stale_key("app-3", FORTNIGHT_AGO_TUESDAY),
        kind=STALE_DIGEST.name,
        item_id="app-3",
        recipient_id="bdm-1",
        recipient_email=BROOKE,
        business_date="2026-11-23",
        send_token="other-token",
    )
    assert ledger.claim(in_flight, "other-run", TUESDAY.astimezone(UTC))

    # When the stale check runs as a dry run on Tuesday
    summary = run("stale_applications", TUESDAY, dry_run=True)

    # Then only app-2 would be sent
    [would] = summary.would_send
    assert (would["keys"], would["subject"]) == (
        [stale_key("app-2", FORTNIGHT_AGO_TUESDAY)],
        "Stale Application Alert: APP-1002",
    )
    assert summary.skipped == 2
    assert len(sent_emails()) == 1
    assert entry(stale_key("app-3", FORTNIGHT_AGO_TUESDAY)).run_id == "other-run"


# --- validation paths: reported by id and reason, nothing else blocked -------------------


def test_a_stale_application_without_a_bdm_is_reported_and_the_others_alerted(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application("app-2", reference_number="APP-1002", bd_id=None)

    summary = run("stale_applications", MONDAY, ses)

    assert summary.invalid_items == [{"item_id": "app-2", "reason": "bd_id is missing"}]
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}
    assert list(Notification.by_item.query("app-2")) == []


def test_a_note_on_an_application_without_a_bdm_reminds_only_its_author(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 on app-1, which has no BDM
    f.crm()
    f.application(bd_id=None)
    f.note()

    summary = run("note_reminders", MONDAY, ses)

    # Then its author is reminded, with no copy and nothing reported
    assert subjects_by_recipient() == {SAM: ["Note Reminder: Call the valuer"]}
    assert summary.invalid_items == []
    key = registry.kind("note_reminders").key("note-1", "2026-11-23", "staff-2")
    assert entry(key).kind == "note_reminders"


def test_a_note_with_no_author_and_no_bdm_is_reported_and_the_others_sent(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application(bd_id=None)
    f.note()
    f.note("note-2", created_by=None)

    summary = run("note_reminders", MONDAY, ses)

    assert summary.invalid_items == [
        {
            "item_id": "note-2",
            "reason": "note has neither an author (created_by) nor a BDM to remind",
        }
    ]
    assert subjects_by_recipient() == {SAM: ["Note Reminder: Call the valuer"]}


def test_a_repayment_without_an_application_is_reported_and_the_others_sent(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    f.repayment()
    f.repayment("rep-2", application_id=None)

    summary = run("repayment_reminders", MONDAY, ses)

    assert summary.invalid_items == [{"item_id": "rep-2", "reason": "application_id is missing"}]
    assert subjects_by_recipient() == {
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"]
    }
    assert list(Notification.by_item.query("rep-2")) == []


def test_a_repayment_of_an_application_without_borrowers_is_reported_and_the_others_sent(
    service: Settings, ses: SESV2Client
) -> None:
    f.crm()
    f.application()
    f.application("app-2", reference_number="APP-1002", borrower_ids=None)
    f.repayment()
    f.repayment("rep-2", application_id="app-2")

    summary = run("repayment_reminders", MONDAY, ses)

    assert summary.invalid_items == [
        {"item_id": "rep-2", "reason": "application 'app-2' has no borrowers"}
    ]
    assert subjects_by_recipient() == {
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"]
    }


def test_an_escalation_of_an_application_without_borrowers_still_reaches_the_bdm(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1, ten days overdue, on an application that lists no borrowers
    f.crm()
    f.application(borrower_ids=None)
    f.repayment(due_date="2026-11-13")

    summary = run("repayment_reminders", MONDAY, ses)

    # Then the escalation goes to the BDM, who is the only recipient anyway
    assert summary.invalid_items == []
    assert subjects_by_recipient() == {BROOKE: ["ESCALATION: 10 Days Overdue Repayment: APP-1001"]}
    assert "- APP-1001: No borrowers on file, $2,450.50 due 13/11/2026" in sent_emails()[0].text


@pytest.fixture
def reported(service: Settings, ses: SESV2Client) -> None:
    """The usual cast, with two borrowers."""
    f.crm(borrowers=2)


def only_reason(summary: RunSummary, item_id: str) -> str:
    """The one reported reason, asserting that nothing but ``item_id`` was reported."""
    assert [i["item_id"] for i in summary.invalid_items] == [item_id]
    reason = summary.invalid_items[0]["reason"]
    return reason


def test_an_unreadable_application_is_reported_by_the_stale_check(
    reported: None, ses: SESV2Client
) -> None:
    # Given app-2's loan amount is stored as a string, next to a healthy stale app-1
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.raw_item(
        "test-applications",
        {
            "id": {"S": "app-2"},
            "reference_number": {"S": "APP-1002"},
            "stage": {"S": "valuation_ordered"},
            "stage_last_updated": {"S": FORTNIGHT_AGO},
            "loan_amount": {"S": "lots"},
            "bd_id": {"S": "bdm-1"},
        },
    )

    summary = run("stale_applications", MONDAY, ses)

    assert only_reason(summary, "app-2").startswith("unreadable item")
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}


def test_an_unreadable_note_is_reported_and_the_others_sent(
    reported: None, ses: SESV2Client
) -> None:
    f.application()
    f.note()
    f.raw_item(
        "test-notes",
        {
            "id": {"S": "note-2"},
            "remind_date": {"S": "2026-11-23"},
            "created_by": {"S": "staff-2"},
            "title": {"N": "1"},
        },
    )

    summary = run("note_reminders", MONDAY, ses)

    assert only_reason(summary, "note-2").startswith("unreadable item")
    assert sorted(subjects_by_recipient()) == [BROOKE, SAM]


def test_a_repayment_of_an_unreadable_application_is_reported(
    reported: None, ses: SESV2Client
) -> None:
    f.application()
    f.repayment()
    f.raw_item(
        "test-applications",
        {"id": {"S": "app-2"}, "borrower_ids": {"S": "bor-2"}, "loan_amount": {"S": "lots"}},
    )
    f.repayment("rep-2", application_id="app-2")

    summary = run("repayment_reminders", MONDAY, ses)

    assert only_reason(summary, "rep-2") == "application 'app-2' does not exist"
    assert subjects_by_recipient() == {
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"]
    }


def test_an_unreadable_borrower_is_reported_and_the_other_borrower_reminded(
    reported: None, ses: SESV2Client
) -> None:
    f.application(borrower_ids=["bor-1", "bor-3"])
    f.raw_item("test-borrowers", {"id": {"S": "bor-3"}, "email": {"N": "7"}})
    f.repayment()

    summary = run("repayment_reminders", MONDAY, ses)

    assert only_reason(summary, "rep-1").startswith("borrower 'bor-3': unreadable item")
    assert subjects_by_recipient() == {
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"]
    }
    assert MIA not in subjects_by_recipient()


def test_a_stale_application_of_an_unreadable_bdm_is_reported_and_other_bdms_alerted(
    reported: None, ses: SESV2Client
) -> None:
    # Given app-1 belongs to Brooke, and app-2 to bdm-3, whose email is stored as a number
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application("app-2", reference_number="APP-1002", bd_id="bdm-3")
    f.raw_item("test-staff", {"id": {"S": "bdm-3"}, "email": {"N": "7"}})

    summary = run("stale_applications", MONDAY, ses)

    assert only_reason(summary, "app-2").startswith("BDM 'bdm-3': unreadable item")
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}
    assert list(Notification.by_item.query("app-2")) == []


# --- the SES client ----------------------------------------------------------------------


@pytest.fixture
def fresh_clients() -> Iterator[None]:
    mailer._default_clients.pop(REGION, None)
    yield
    mailer._default_clients.pop(REGION, None)


def test_the_ses_client_never_retries_and_gives_up_waiting_in_time(
    fresh_clients: None, aws: None
) -> None:
    # When a function creates its SES client
    client = mailer.ses_client(REGION)

    # Then a send is attempted once (a retry could deliver it twice) within bounded waits
    config = client.meta.config
    # botocore-stubs declare Config's options only as constructor arguments.
    assert config.retries == {"mode": "standard", "total_max_attempts": 1}  # type: ignore[attr-defined]
    assert (config.connect_timeout, config.read_timeout) == (5, 15)  # type: ignore[attr-defined]
    assert client.meta.region_name == REGION
    # And a warm container reuses it
    assert mailer.ses_client(REGION) is client


def test_the_ses_client_pools_one_connection_per_send_in_flight(
    fresh_clients: None, aws: None
) -> None:
    # When a run that sends from 7 workers makes the container's SES client
    client = mailer.ses_client(REGION, 7)

    # Then its connection pool holds 7, so no send waits for a connection (botocore's
    # default is 10)
    # botocore-stubs declare Config's options only as constructor arguments.
    assert client.meta.config.max_pool_connections == 7  # type: ignore[attr-defined]


def test_a_mailer_without_a_client_makes_one_pooling_its_sends_in_flight(
    fresh_clients: None, aws: None
) -> None:
    # Given a mailer for a run sending from 7 workers, given no client
    sender = mailer.Mailer("reminders@example.com.au", REGION, connections=7)

    # When it first needs its client
    client = sender.client

    # Then it made the container's client, pooling 7 connections, and keeps it
    # botocore-stubs declare Config's options only as constructor arguments.
    assert client.meta.config.max_pool_connections == 7  # type: ignore[attr-defined]
    assert sender.client is client is mailer.ses_client(REGION)


def test_each_region_gets_its_own_ses_client_in_that_region(fresh_clients: None, aws: None) -> None:
    # Given the functions' own region has a client
    home = mailer.ses_client(REGION)

    # When a client for another region is asked for
    mailer._default_clients.pop("eu-west-1", None)
    try:
        other = mailer.ses_client("eu-west-1")

        # Then it is a new client in that region, with the same settings, kept for reuse
        assert other is not home
        assert other.meta.region_name == "eu-west-1"
        # botocore-stubs declare Config's options only as constructor arguments.
        retries = other.meta.config.retries  # type: ignore[attr-defined]
        assert retries == {"mode": "standard", "total_max_attempts": 1}
        assert mailer.ses_client("eu-west-1") is other
        assert mailer.ses_client(REGION) is home
    finally:
        mailer._default_clients.pop("eu-west-1", None)


def test_a_ledger_lookup_reads_every_entry_strongly_consistent(service: Settings) -> None:
    # Given the ledger's table, watched at the client's request parameters
    client = Notification._get_connection().connection.client
    requests: list[dict[str, Any]] = []

    def watch(params: dict[str, Any], **_: object) -> None:
        requests.append(params)

    # When entries are looked up (a claim another run just wrote must be seen)
    client.meta.events.register("provide-client-params.dynamodb.BatchGetItem", watch)
    try:
        ledger.lookup(["k-1", "k-2", "k-1"])
    finally:
        client.meta.events.unregister("provide-client-params.dynamodb.BatchGetItem", watch)

    # Then one BatchGetItem asked for each key once with a strongly consistent read
    [request] = requests
    [(table, read)] = request["RequestItems"].items()
    assert table == Notification.Meta.table_name
    assert read["ConsistentRead"] is True
    assert sorted(key["id"]["S"] for key in read["Keys"]) == ["k-1", "k-2"]


def test_a_stale_application_with_an_absurd_loan_amount_is_reported_by_field(
    reported: None, ses: SESV2Client
) -> None:
    # Given app-2's loan amount is beyond any loan, next to a healthy stale app-1
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application(
        "app-2", reference_number="APP-1002", stage_last_updated=FORTNIGHT_AGO, loan_amount=10**20
    )

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then app-2 is reported, naming the field, and app-1 is still alerted
    reason = only_reason(summary, "app-2")
    assert reason.startswith("loan_amount ")
    assert reason.endswith(" is out of range")
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}


def test_a_stale_digest_names_the_threshold_the_stage_label_and_a_missing_broker(
    service: Settings, ses: SESV2Client
) -> None:
    # Given app-1, stale exactly at the threshold, has no broker on record
    f.crm()
    f.application(stage_last_updated=FORTNIGHT_AGO, broker_name=None)

    # When the stale check runs
    run("stale_applications", MONDAY, ses)

    # Then the digest states the threshold, shows the stage's label and a dash for the broker
    [sent] = sent_emails()
    assert "not changed stage for 14 days or more" in sent.text
    assert (
        "- APP-1001: Valuation Ordered, 14 days in stage, loan amount $750,000.00, broker —"
        in sent.text
    )
    assert "<td>—</td>" in sent.html


def test_a_stale_digest_lists_the_longest_stuck_first_then_by_reference(
    service: Settings, ses: SESV2Client
) -> None:
    # Given three of Brooke's applications: two stuck 14 days, one 20
    f.crm()
    f.application("app-3", reference_number="APP-1003", stage_last_updated=FORTNIGHT_AGO)
    f.application("app-1", reference_number="APP-1001", stage_last_updated=FORTNIGHT_AGO)
    f.application(
        "app-2", reference_number="APP-1002", stage_last_updated="2026-11-03T10:00:00+11:00"
    )

    # When the stale check runs
    run("stale_applications", MONDAY, ses)

    # Then the digest lists the 20-day one first, then the others by reference
    [sent] = sent_emails()
    positions = [sent.text.index(f"- APP-100{n}:") for n in (2, 1, 3)]
    assert positions == sorted(positions)


@pytest.mark.parametrize(
    ("stage_last_updated", "reason"),
    [
        pytest.param(
            "2026-01-05T10:00:00",
            "stage_last_updated '2026-01-05T10:00:00' has no UTC offset",
            id="no-offset",
        ),
        pytest.param(
            "0001-01-01T00:00:00+11:00",
            "stage_last_updated '0001-01-01T00:00:00+11:00' is out of range",
            id="no-local-date",
        ),
    ],
)
def test_an_unusable_stage_timestamp_is_reported_by_field_and_value(
    reported: None, ses: SESV2Client, stage_last_updated: str, reason: str
) -> None:
    # Given app-2's stage_last_updated cannot be placed on a business date
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application("app-2", reference_number="APP-1002", stage_last_updated=stage_last_updated)

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then the reason names the field and quotes the value, and app-1 is alerted
    assert only_reason(summary, "app-2") == reason
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}


def test_a_stale_application_without_a_row_does_not_stop_the_ones_after_it(
    reported: None, ses: SESV2Client
) -> None:
    # Given app-0, in the first stage queried, has no reference; app-1 is stale later on
    f.application("app-0", reference_number=None, stage="inquiry", stage_last_updated=FORTNIGHT_AGO)
    f.application(stage_last_updated=FORTNIGHT_AGO)

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then app-0 is reported and app-1 still alerted
    assert only_reason(summary, "app-0") == "reference_number is missing"
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}


def test_the_stale_query_reads_only_applications_within_two_days_of_the_threshold(
    reported: None, ses: SESV2Client
) -> None:
    # Given app-1 stale (14 days), app-3 changed 13 days ago at 23:00 (within the two days
    # of offset slack the query allows) and app-2 changed 12 days ago
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application(
        "app-3", reference_number="APP-1003", stage_last_updated="2026-11-10T23:00:00+11:00"
    )
    f.application(
        "app-2", reference_number="APP-1002", stage_last_updated="2026-11-11T10:00:00+11:00"
    )

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then it read app-1 and app-3 only, and alerted app-1
    assert summary.items_read == 2
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}


def test_the_stale_query_bound_is_exclusive(reported: None, ses: SESV2Client) -> None:
    # Given app-2's stage_last_updated is exactly the query's bound (twelve days back, a
    # bare date), next to a stale app-1
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application("app-2", reference_number="APP-1002", stage_last_updated="2026-11-11")

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then app-2 is not even read (so not reported either)
    assert summary.items_read == 1
    assert summary.invalid_items == []


def test_a_note_reminder_tells_the_bdm_their_role_and_reports_a_missing_author_as_author(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1's author exists and is reminded with Brooke (the BDM); note-2's author
    # does not exist
    f.note_for_author_and_bdm()
    f.note("note-2", created_by="staff-9")

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then Brooke gets both notes' reminders, each saying she is the BDM; Sam's does not
    assert sorted(sent.recipients[0] for sent in sent_emails()) == [BROOKE, BROOKE, SAM]
    texts = {sent.recipients[0]: sent.text for sent in sent_emails()}
    role = "where you are the business development manager"
    assert role in texts[BROOKE]
    assert role not in texts[SAM]
    # And note-2's missing author is reported as its author
    assert summary.invalid_items == [
        {"item_id": "note-2", "reason": "author 'staff-9' does not exist"}
    ]


def test_a_bdm_missing_for_a_note_is_reported_as_the_bdm(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 is on an application whose BDM does not exist
    f.crm()
    f.application(bd_id="bdm-9")
    f.note()

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then its author is reminded and the BDM reported as the BDM
    assert subjects_by_recipient() == {SAM: ["Note Reminder: Call the valuer"]}
    assert summary.invalid_items == [{"item_id": "note-1", "reason": "BDM 'bdm-9' does not exist"}]


def test_a_note_author_and_bdm_with_one_address_get_one_reminder(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1's author (staff-2) has the BDM's address, in capitals
    f.crm()
    f.staff("staff-2", "Sam Author", BROOKE.upper())
    f.application()
    f.note()

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then one reminder goes to that address, as the author's
    assert summary.sent == 1
    [sent] = sent_emails()
    assert sent.recipients == [BROOKE.upper()]


def test_a_note_without_an_author_still_reminds_the_bdm(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1 has no author, on Brooke's application
    f.crm()
    f.application()
    f.note(created_by=None)

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then Brooke is reminded
    assert subjects_by_recipient() == {BROOKE: ["Note Reminder: Call the valuer"]}


def test_a_note_author_whose_key_would_be_too_big_is_reported_and_the_bdm_reminded(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1's author has an id that fits a key on its own, but not in the ledger key
    long_id = "s" * 2040
    f.crm()
    f.staff(long_id, "Sam Author", SAM)
    f.application()
    f.note(created_by=long_id)

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then the author's reminder is reported and Brooke is still reminded
    assert [i["item_id"] for i in summary.invalid_items] == ["note-1"]
    assert "ledger key" in summary.invalid_items[0]["reason"]
    assert subjects_by_recipient() == {BROOKE: ["Note Reminder: Call the valuer"]}


@pytest.mark.parametrize("title", [None, " \t "], ids=["none", "blank"])
def test_a_note_without_a_title_or_content_is_sent_as_an_untitled_note(
    service: Settings, ses: SESV2Client, title: str | None
) -> None:
    # Given note-1 has no usable title and no content, to its author only
    f.crm()
    f.note(application_id=None, title=title, content=None)

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then the subject and the body say "Untitled note", and nothing stands in for content
    [sent] = sent_emails()
    assert sent.subject == "Note Reminder: Untitled note"
    assert "Untitled note" in sent.text
    lines = sent.text.splitlines()
    at = lines.index("Untitled note")
    assert lines[at + 1 : at + 3] == ["", ""]


def test_an_unreadable_note_does_not_stop_the_notes_read_after_it(
    reported: None, ses: SESV2Client
) -> None:
    # Given an unreadable note-0 stored first, then note-1 and note-2, all due today
    f.raw_item(
        "test-notes",
        {"id": {"S": "note-0"}, "remind_date": {"S": "2026-11-23"}, "title": {"N": "1"}},
    )
    f.application()
    f.note(application_id=None)
    f.note("note-2", application_id=None, title="Send the contract")

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then note-0 is reported and both others reach their author
    assert only_reason(summary, "note-0").startswith("unreadable item")
    assert sorted(subjects_by_recipient()[SAM]) == [
        "Note Reminder: Call the valuer",
        "Note Reminder: Send the contract",
    ]


def test_an_unreadable_repayment_does_not_stop_the_repayments_due_after_it(
    reported: None, ses: SESV2Client
) -> None:
    # Given an unreadable rep-0 read first, then rep-1, both due on 30/11/2026
    f.raw_item(
        "test-repayments",
        {"id": {"S": "rep-0"}, "due_date": {"S": "2026-11-30"}, "amount": {"S": "x"}},
    )
    f.application(borrower_ids=["bor-1"])
    f.repayment()

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-0 is reported and rep-1 still reaches its borrower
    assert only_reason(summary, "rep-0").startswith("unreadable item")
    assert subjects_by_recipient() == {
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"]
    }


def test_a_paid_repayment_does_not_stop_the_repayments_due_after_it(
    reported: None, ses: SESV2Client
) -> None:
    # Given a paid rep-0 read first, then an unpaid rep-1, both due on 30/11/2026
    f.application(borrower_ids=["bor-1"])
    f.repayment("rep-0", paid_date="2026-11-20")
    f.repayment()

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then only rep-1 is reminded, and nothing is reported
    assert summary.invalid_items == []
    assert subjects_by_recipient() == {
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"]
    }


def test_a_dry_run_lists_a_bdms_escalations_as_one_digest_naming_each_repayment(
    service: Settings, ses: SESV2Client
) -> None:
    # Given two repayments of Brooke's loans escalated on the same day
    f.two_escalations_of_brooke()

    # When the repayment check runs as a dry run
    summary = run("repayment_reminders", MONDAY, ses, dry_run=True)

    # Then it lists one digest covering both repayments, by id and ledger key
    assert summary.would_send == [
        {
            "kind": "repayment_overdue_10_day",
            "recipient_id": "bdm-1",
            "recipient_name": "Brooke Davis",
            "recipient_email": BROOKE,
            "subject": "ESCALATION: 2 Overdue Repayments, 10 to 12 Days",
            "item_ids": ["rep-1", "rep-2"],
            "keys": [
                ledger_key("repayment_overdue_10_day", "rep-1", "2026-11-13", "bdm-1"),
                ledger_key("repayment_overdue_10_day", "rep-2", "2026-11-11", "bdm-1"),
            ],
        }
    ]
    assert sent_emails() == []
    assert Notification.count() == 0


def test_a_bdms_escalations_go_out_as_one_digest_and_each_repayment_is_settled(
    service: Settings, ses: SESV2Client
) -> None:
    # Given two repayments of Brooke's loans escalated on the same day
    f.two_escalations_of_brooke()

    # When the repayment check runs, and again later that day
    first = run("repayment_reminders", MONDAY, ses)
    again = run("repayment_reminders", MONDAY, ses)

    # Then Brooke got one email listing both, most overdue first
    [digest] = sent_emails()
    assert digest.recipients == [BROOKE]
    assert digest.subject == "ESCALATION: 2 Overdue Repayments, 10 to 12 Days"
    rows = [line for line in digest.text.splitlines() if line.startswith("- ")]
    assert rows == [
        "- APP-1002: Ben Lee, $2,450.50 due 11/11/2026, 12 days overdue",
        "- APP-1001: Ben Lee, $2,450.50 due 13/11/2026, 10 days overdue",
    ]
    assert (first.sent, first.emails_sent, again.sent) == (2, 1, 0)
    # and each repayment has its own sent entry, with the one message's id, and its flag
    entries = [
        Notification.get(ledger_key("repayment_overdue_10_day", rep, due, "bdm-1"))
        for rep, due in (("rep-1", "2026-11-13"), ("rep-2", "2026-11-11"))
    ]
    assert [e.status for e in entries] == [ledger.SENT, ledger.SENT]
    assert entries[0].message_id == entries[1].message_id == digest.message_id
    assert [Repayment.get(r).overdue_10_day_sent for r in ("rep-1", "rep-2")] == [True, True]


def test_a_kinds_key_is_its_check_then_its_parts_with_the_tier_in_its_place() -> None:
    # Given the 3-day overdue kind, whose tier part is fixed
    overdue = registry.kind("repayment_overdue_3_day")

    # When a key is built from the free parts (repayment, due date, recipient)
    key = overdue.key("rep-1", "2026-11-20", "bor-1")

    # Then the check's name leads and the tier sits between the due date and the recipient
    assert key == "repayment_reminders#rep-1#2026-11-20#overdue_3_day#bor-1"


@pytest.mark.parametrize("values", [("rep-1", "2026-11-20"), ("rep-1", "2026-11-20", "x", "y")])
def test_a_kind_refuses_a_key_of_too_few_or_too_many_parts_naming_the_ones_it_takes(
    values: tuple[str, ...],
) -> None:
    # Given the upcoming kind, which takes a repayment, a due date and a recipient
    upcoming = registry.kind("repayment_upcoming")

    # When a key is built from another number of parts, Then it is refused by name
    with pytest.raises(TypeError) as refused:
        upcoming.key(*values)
    assert str(refused.value) == "repayment_upcoming keys take repayment_id, due_date, recipient_id"
