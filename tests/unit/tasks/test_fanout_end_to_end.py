"""Integration: a run too big for its time fans out to SQS; the consumer sends through the ledger.

The producer is the scheduled ``check_note_reminders`` function and the consumer the
``deliver_fanout`` function, both invoked through ``chalice.test.Client`` on the dev
stage. Messages really go to moto's SQS and are read back (``WaitTimeSeconds=0``:
long polling hangs under frozen time); the consumer gets them as Lambda hands them
over. DynamoDB is moto's or, with ``--dynamodb=local``, DynamoDB Local.

The test client's Lambda context allows 300 s that never run down under freezegun;
with the 30 s margin and ``FANOUT_SEND_RATE=0.01`` a run can send 2 notices itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from chalice.test import Client
from freezegun import freeze_time
from mypy_boto3_sqs import SQSClient

from chalicelib.mailer import ses_client
from chalicelib.models import Notification
from tests import factories
from tests.support import (
    REGION,
    ledger_key,
    scheduled_event,
    sent_emails,
    ses_error,
    ses_faults,
    subjects_by_recipient,
    utc,
)

pytestmark = [pytest.mark.task, pytest.mark.integration]

# The dev stage's queue: its name is what the dev stage's policy lets a run send to.
QUEUE = "loan-reminders-dev-fanout"
AUTHORS = [f"author{n}@lender.example.com.au" for n in range(6)]
PRODUCED_AT = utc("2026-11-23 08:30")  # 19:30 on 23 Nov in Sydney
CONSUMED_AT = "2026-11-23T13:10:00Z"  # 00:10 on 24 Nov in Sydney, 280 minutes later


@pytest.fixture
def queue(client: Client, monkeypatch: pytest.MonkeyPatch) -> str:
    """The fan-out queue, and the functions' settings that send to it."""
    url = sqs().create_queue(QueueName=QUEUE)["QueueUrl"]
    monkeypatch.setenv("FANOUT_QUEUE_URL", url)
    monkeypatch.setenv("FANOUT_SEND_RATE", "0.01")
    monkeypatch.setenv("FANOUT_MAX_AGE_MINUTES", "300")
    return url


def sqs() -> SQSClient:
    """An SQS client of the test (not the functions')."""
    return boto3.client("sqs", region_name=REGION)


def six_notes_to_six_authors() -> None:
    """Six notes due on 23 Nov, each to its own author (no application, so no BDM)."""
    for n, address in enumerate(AUTHORS):
        factories.staff(f"author-{n}", f"Author {n}", address)
        factories.note(f"note-{n}", application_id=None, created_by=f"author-{n}")


def produce(client: Client) -> dict[str, Any]:
    """The note reminder function fires at :data:`PRODUCED_AT`."""
    with freeze_time(PRODUCED_AT):
        event = scheduled_event(client, "check_note_reminders", PRODUCED_AT)
        payload: dict[str, Any] = client.lambda_.invoke("check_note_reminders", event).payload
    return payload


def received(url: str) -> list[dict[str, Any]]:
    """Every message in the queue, read back without long polling and taken off it."""
    messages: list[dict[str, Any]] = []
    while True:
        batch = sqs().receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        fresh = batch.get("Messages", [])
        if not fresh:
            return messages
        for message in fresh:
            sqs().delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            messages.append(dict(message))


def sqs_event(client: Client, messages: list[dict[str, Any]]) -> dict[str, Any]:
    """The event Lambda's SQS poller hands the consumer for ``messages``."""
    event = client.events.generate_sqs_event(
        message_bodies=[m["Body"] for m in messages], queue_name=QUEUE
    )
    for record, message in zip(event["Records"], messages, strict=True):
        record["messageId"] = message["MessageId"]
        record["receiptHandle"] = message["ReceiptHandle"]
    return event


def consume(client: Client, event: dict[str, Any], clock: str = CONSUMED_AT) -> Any:
    """The consumer function handles ``event`` with the wall clock at ``clock``."""
    with freeze_time(clock):
        return client.lambda_.invoke("deliver_fanout", event).payload


def test_a_run_short_of_time_enqueues_the_rest_and_the_consumer_sends_each_once(
    client: Client, queue: str
) -> None:
    # Given six note reminders due, and time for two
    six_notes_to_six_authors()

    # When the scheduled run fires
    payload = produce(client)

    # Then it sends two itself and hands four to the queue
    assert (payload["sent"], payload["enqueued"], payload["deferred"]) == (2, 4, 0)
    assert payload["notices_due"] == 6
    assert len(sent_emails()) == 2
    messages = received(queue)
    bodies = [json.loads(m["Body"]) for m in messages]
    assert sum(len(body["notices"]) for body in bodies) == 4
    assert {body["business_date"] for body in bodies} == {"2026-11-23"}

    # When the consumer is invoked with those messages the next day (Sydney time)
    response = consume(client, sqs_event(client, messages))

    # Then every author has exactly one reminder, and the ledger records the producer's day
    assert response == {"batchItemFailures": []}
    assert subjects_by_recipient() == {a: ["Note Reminder: Call the valuer"] for a in AUTHORS}
    for n in range(6):
        entry = Notification.get(
            ledger_key("note_reminders", f"note-{n}", "2026-11-23", f"author-{n}")
        )
        assert (entry.status, entry.business_date) == ("sent", "2026-11-23")
        assert entry.message_id in {sent.message_id for sent in sent_emails()}


def test_a_redelivered_message_sends_nothing_again(client: Client, queue: str) -> None:
    # Given the four enqueued reminders delivered once by the consumer
    six_notes_to_six_authors()
    produce(client)
    event = sqs_event(client, received(queue))
    consume(client, event)
    assert len(sent_emails()) == 6

    # When SQS delivers the same messages again
    response = consume(client, event, clock="2026-11-23T13:20:00Z")

    # Then nothing more is sent and nothing is left to retry
    assert response == {"batchItemFailures": []}
    assert len(sent_emails()) == 6


def test_the_next_run_enqueues_nothing_already_sent(client: Client, queue: str) -> None:
    # Given a fanned-out run whose messages were delivered
    six_notes_to_six_authors()
    produce(client)
    consume(client, sqs_event(client, received(queue)))

    # When the next hourly run finds the same notes due
    with freeze_time(utc("2026-11-23 08:45")):
        at = utc("2026-11-23 08:45")
        later = client.lambda_.invoke(
            "check_note_reminders", scheduled_event(client, "check_note_reminders", at)
        ).payload

    # Then it skips them all: nothing sent, nothing enqueued. The two the run sent itself
    # left the pending index and are not read; the consumer's four are read (and skipped)
    # once more, by this run, which then takes them out of it
    assert (later["sent"], later["enqueued"], later["items_read"], later["skipped"]) == (
        0,
        0,
        4,
        4,
    )
    assert received(queue) == []
    assert len(sent_emails()) == 6


def test_poison_messages_are_reported_and_never_block_the_others(
    client: Client, queue: str
) -> None:
    # Given a good message between three that can never be delivered
    six_notes_to_six_authors()
    produce(client)
    good = received(queue)[0]
    body = json.loads(good["Body"])
    unknown_kind = {**body, "notices": [{**body["notices"][0], "kind": "birthday_wishes"}]}
    foreign_key = {
        **body,
        "notices": [
            {**body["notices"][0], "parts": [{"key": "stale_applications#x", "item_id": "x"}]}
        ],
    }
    messages = [
        {"MessageId": "not-json", "ReceiptHandle": "r1", "Body": "{not json"},
        good,
        {"MessageId": "unknown-kind", "ReceiptHandle": "r2", "Body": json.dumps(unknown_kind)},
        {"MessageId": "foreign-key", "ReceiptHandle": "r3", "Body": json.dumps(foreign_key)},
    ]

    # When the consumer gets them in one batch
    response = consume(client, sqs_event(client, messages))

    # Then the three are listed for SQS (and its dead-letter queue); the good one is delivered
    assert response == {
        "batchItemFailures": [
            {"itemIdentifier": "not-json"},
            {"itemIdentifier": "unknown-kind"},
            {"itemIdentifier": "foreign-key"},
        ]
    }
    delivered = {n["recipient"]["email"] for n in body["notices"]}
    assert {r for s in sent_emails()[2:] for r in s.recipients} == delivered


def test_a_transient_send_failure_fails_its_record_and_the_redelivery_sends_only_it(
    client: Client, queue: str
) -> None:
    # Given the enqueued messages, and SES throttling one of their recipients
    six_notes_to_six_authors()
    produce(client)
    messages = received(queue)
    victim = json.loads(messages[0]["Body"])["notices"][0]["recipient"]["email"]
    event = sqs_event(client, messages)
    throttled = ses_error("TooManyRequestsException", 429)

    # When the consumer delivers them
    with ses_faults(ses_client(REGION), lambda to: throttled if to == victim else None):
        response = consume(client, event)

    # Then that message's record is failed (SQS redelivers it), the others are done
    assert response == {"batchItemFailures": [{"itemIdentifier": messages[0]["MessageId"]}]}
    assert victim not in subjects_by_recipient()
    assert len(sent_emails()) == 5

    # When SQS redelivers it, SES answering again
    again = consume(client, sqs_event(client, messages[:1]), clock="2026-11-23T13:25:00Z")

    # Then only the throttled reminder goes out
    assert again == {"batchItemFailures": []}
    assert len(sent_emails()) == 6
    assert subjects_by_recipient()[victim] == ["Note Reminder: Call the valuer"]


def test_a_message_older_than_its_maximum_age_is_dropped_for_the_next_run(
    client: Client, queue: str
) -> None:
    # Given enqueued reminders
    six_notes_to_six_authors()
    produce(client)
    event = sqs_event(client, received(queue))

    # When the consumer gets them 301 minutes after they were enqueued
    response = consume(client, event, clock="2026-11-23T13:31:00Z")

    # Then they are acknowledged without sending: the next run collects what is still due
    assert response == {"batchItemFailures": []}
    assert len(sent_emails()) == 2


def test_a_run_without_a_queue_defers_nothing_while_its_time_suffices(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given six reminders due and no fan-out queue configured
    monkeypatch.delenv("FANOUT_QUEUE_URL", raising=False)
    six_notes_to_six_authors()

    # When the run fires
    payload = produce(client)

    # Then it sends them all itself
    assert (payload["sent"], payload["enqueued"]) == (6, 0)


def test_the_producer_and_the_consumer_publish_their_counts_as_emf_metrics(
    client: Client, queue: str, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given four reminders handed to the queue
    six_notes_to_six_authors()
    produce(client)
    produced = [d for d in stdout_json() if "NoticesEnqueued" in d]

    # When the consumer delivers them
    consume(client, sqs_event(client, received(queue)))
    consumed = [d for d in stdout_json() if "_aws" in d]

    # Then the run counted them enqueued, and the consumer sent, under the check's dimensions
    assert [(d["check"], d["service"], d["NoticesEnqueued"]) for d in produced] == [
        ("note_reminders", "loan-reminders-dev", [4.0])
    ]
    [document] = consumed
    assert (document["check"], document["NoticesSent"], document["NoticesFailed"]) == (
        "note_reminders",
        [4.0],
        [0.0],
    )
