"""The fan-out at its edges: when a run splits, what a message holds, what SQS refuses,
and what the consumer does with an ambiguous send or a ledger it cannot read.

Runs go through ``chalicelib.runner.run_check`` with a Lambda clock (``remaining_ms``)
on the test stage, whose fan-out queue is ``test-fanout``; the consumer is
``chalicelib.fanout.handle_batch``. Messages are read back from moto's SQS.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from mypy_boto3_sesv2 import SESV2Client
from mypy_boto3_sqs import SQSClient

from chalicelib import fanout, ledger
from chalicelib.config import Settings
from chalicelib.mailer import Email, Mailer, Recipient, ses_client
from chalicelib.models import Notification, Repayment
from ops.demo import LENDER_ENVIRONMENT
from tests import factories
from tests.factories import BEN, BROOKE
from tests.support import (
    REGION,
    SENDER,
    SES_ACCOUNT,
    ledger_key,
    lost_responses,
    run,
    sent_emails,
    sydney,
)

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

AT = sydney("2026-11-23 10:00")
# 30 s of margin, then 3 s at 1 notice/s: a run sends three notices itself.
THREE_NOTICES_LEFT = 33_000


@pytest.fixture
def queue(service: Settings, monkeypatch: pytest.MonkeyPatch) -> str:
    """The test stage's fan-out queue, configured for the runs."""
    url = sqs().create_queue(QueueName="test-fanout")["QueueUrl"]
    monkeypatch.setenv("FANOUT_QUEUE_URL", url)
    monkeypatch.setenv("FANOUT_SEND_RATE", "1")
    return url


def sqs() -> SQSClient:
    """The test's own SQS client."""
    return boto3.client("sqs", region_name=REGION)


def notes(count: int, *, content: str = "Chase the valuation report.") -> None:
    """``count`` notes due on 23 Nov, each to its own author."""
    for n in range(count):
        factories.staff(f"author-{n}", f"Author {n}", f"author{n}@lender.example.com.au")
        factories.note(f"note-{n}", application_id=None, created_by=f"author-{n}", content=content)


def bodies(url: str) -> list[dict[str, Any]]:
    """The bodies of every message in the queue, taken off it."""
    found: list[dict[str, Any]] = []
    while (
        messages := sqs()
        .receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        .get("Messages", [])
    ):
        for message in messages:
            sqs().delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            found.append(json.loads(message["Body"]))
    return found


def records(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """An SQS event of ``bodies``, message ids ``m0``, ``m1``, ..."""
    return {
        "Records": [{"messageId": f"m{i}", "body": json.dumps(b)} for i, b in enumerate(bodies)]
    }


def event_parts(event: dict[str, Any]) -> list[dict[str, str]]:
    """The ledger parts the records of ``event`` carry."""
    return [
        part
        for record in event["Records"]
        for notice in json.loads(record["body"])["notices"]
        for part in notice["parts"]
    ]


def test_a_run_whose_notices_fit_its_time_enqueues_nothing(queue: str) -> None:
    notes(3)

    summary = run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)

    assert (summary.sent, summary.enqueued) == (3, 0)
    assert bodies(queue) == []


def test_a_run_counts_on_the_accounts_send_rate_when_it_is_below_the_process_rate(
    queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a process that could send 2 notices a second, but an account allowed 1 a
    # second (95 % of it paced), and 3 s of time left after the margin
    monkeypatch.setenv("FANOUT_SEND_RATE", "2")
    SES_ACCOUNT.max_send_rate = 1.0
    notes(5)

    # When the run decides what overflows
    summary = run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)

    # Then it keeps what the account's rate fits in its time (2 at 0.95/s), not the 5 its
    # process could (6 at 2/s), and hands the rest to the queue
    assert (summary.enqueued, summary.notices_due) == (3, 5)
    assert sum(len(body["notices"]) for body in bodies(queue)) == 3


def test_a_run_without_a_lambda_clock_sends_everything_itself(queue: str) -> None:
    # Given more notices than a Lambda run could send, run by hand (no deadline)
    notes(5)

    summary = run("note_reminders", AT)

    assert (summary.sent, summary.enqueued) == (5, 0)
    assert bodies(queue) == []


def test_a_dry_run_never_enqueues(queue: str) -> None:
    notes(5)

    summary = run("note_reminders", AT, dry_run=True, remaining_ms=lambda: THREE_NOTICES_LEFT)

    assert (len(summary.would_send), summary.enqueued) == (5, 0)
    assert bodies(queue) == []


def test_a_message_carries_the_rendered_email_the_parts_and_the_producers_day(queue: str) -> None:
    # Given four notes, time for three
    notes(4)

    # When the run splits
    summary = run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)

    # Then the fourth went out as a message with everything the consumer needs
    assert (summary.sent, summary.enqueued, summary.notices_due) == (3, 1, 4)
    [body] = bodies(queue)
    assert (body["v"], body["check"], body["business_date"]) == (1, "note_reminders", "2026-11-23")
    assert body["run_id"] == summary.run_id
    [notice] = body["notices"]
    n = notice["recipient"]["id"].removeprefix("author-")
    assert notice["kind"] == "note_reminders"
    assert notice["recipient"] == {
        "id": f"author-{n}",
        "name": f"Author {n}",
        "email": f"author{n}@lender.example.com.au",
    }
    key = ledger_key("note_reminders", f"note-{n}", "2026-11-23", f"author-{n}")
    assert notice["parts"] == [{"key": key, "item_id": f"note-{n}"}]
    assert notice["email"]["subject"] == "Note Reminder: Call the valuer"
    assert "Chase the valuation report." in notice["email"]["text"]
    assert "<html" in notice["email"]["html"]
    # And it is the one not sent, with nothing written to the ledger for it: the consumer claims it
    assert notice["recipient"]["email"] not in {r for e in sent_emails() for r in e.recipients}
    assert ledger.lookup([key]) == {}


def test_messages_hold_at_most_ten_notices_and_stay_under_the_sqs_limit(queue: str) -> None:
    # Given 25 overflowing notes with 20 KB of content each (about 60 KB rendered)
    notes(28, content="x" * 20_000)

    summary = run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)

    # Then all 25 are enqueued, in messages within SQS's 256 KiB
    assert summary.enqueued == 25
    found = bodies(queue)
    assert sum(len(b["notices"]) for b in found) == 25
    assert all(len(b["notices"]) <= fanout.NOTICES_PER_MESSAGE for b in found)
    assert all(
        len(json.dumps(b, separators=(",", ":")).encode()) <= fanout.MAX_PAYLOAD_BYTES
        for b in found
    )
    assert len(found) > 3  # the size, not the count, split them


def _refuse_the_first_entry(params: dict[str, Any], **_: object) -> tuple[AWSResponse, Any]:
    entries = params["body"]
    parsed = json.loads(entries)["Entries"]
    response = AWSResponse("https://sqs.example", 200, {}, None)  # type: ignore[arg-type]
    return response, {
        "Successful": [
            {"Id": e["Id"], "MessageId": f"id-{e['Id']}", "MD5OfMessageBody": "x"}
            for e in parsed[1:]
        ],
        "Failed": [{"Id": parsed[0]["Id"], "SenderFault": False, "Code": "InternalError"}],
    }


@pytest.fixture
def sqs_refusing_one_entry() -> Iterator[None]:
    """SQS answers every SendMessageBatch with its first entry refused (the functions' client)."""
    client = fanout.sqs_client(REGION)
    event = "before-call.sqs.SendMessageBatch"
    client.meta.events.register(event, _refuse_the_first_entry)  # type: ignore[arg-type]
    yield
    client.meta.events.unregister(event, _refuse_the_first_entry)  # type: ignore[arg-type]


def test_notices_sqs_refuses_stay_with_the_run_and_are_deferred_to_the_next(
    queue: str, sqs_refusing_one_entry: None
) -> None:
    # Given 15 notes and no time to send any: 10 go in the first message, 5 in the second
    notes(15)

    # When SQS refuses the first message
    summary = run("note_reminders", AT, remaining_ms=lambda: 29_000)

    # Then its notices are not counted as enqueued: the run's clock defers them, due again
    assert summary.enqueued == 5
    assert summary.deferred == 10
    assert summary.notices_due == 15
    assert sum(len(b["notices"]) for b in bodies(queue)) == 0  # the hook answered for SQS


def test_a_lost_ses_response_in_the_consumer_leaves_the_entry_unknown_and_is_not_resent(
    queue: str, settings: Settings, ses: SESV2Client
) -> None:
    # Given one enqueued note reminder
    notes(4)
    run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)
    event = records(bodies(queue))
    # The functions' own SES client: no automatic retries (a retry could send it twice)
    client = ses_client(REGION)
    mailer = Mailer(SENDER, REGION, client=client, configuration_set=settings.ses_configuration_set)
    now = AT + timedelta(minutes=5)

    # When SES accepts it but its answer is lost
    with lost_responses(client, "SendEmail", lambda body: True) as lost:
        consumed = fanout.handle_batch(event, now=now, settings=settings, mailer=mailer)

    # Then the record is done (not redelivered blindly) and the entry waits for SES's events
    [part] = event_parts(event)
    key = part["key"]
    assert len(lost) == 1
    assert consumed.response() == {"batchItemFailures": []}
    assert Notification.get(key).status == ledger.UNKNOWN

    # And a redelivery inside the settling window sends nothing
    again = fanout.handle_batch(
        event, now=now + timedelta(minutes=1), settings=settings, mailer=mailer
    )
    assert again.response() == {"batchItemFailures": []}
    assert len(sent_emails()) == 4


def test_a_record_whose_ledger_cannot_be_read_is_redelivered(
    queue: str, settings: Settings, ses: SESV2Client
) -> None:
    # Given an enqueued reminder, and a consumer whose ledger table does not exist
    notes(4)
    run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)
    event = records(bodies(queue))
    missing = Settings.from_env(
        {
            **{f"{t.upper()}_TABLE": f"gone-{t}" for t in ("applications", "notes", "repayments")},
            **{f"{t.upper()}_TABLE": f"gone-{t}" for t in ("staff", "borrowers", "notifications")},
            "SENDER_EMAIL": SENDER,
            **LENDER_ENVIRONMENT,
            "AWS_REGION": REGION,
            "DYNAMODB_ENDPOINT_URL": settings.dynamodb_endpoint or "",
        }
    )

    # When the consumer handles it
    consumed = fanout.handle_batch(
        event, now=AT, settings=missing, mailer=Mailer(SENDER, REGION, client=ses)
    )

    # Then nothing is sent and the record is failed, so SQS delivers it again
    assert consumed.response() == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert len(sent_emails()) == 3


def test_a_consumer_out_of_time_leaves_its_records_for_redelivery(
    queue: str, settings: Settings, ses: SESV2Client
) -> None:
    # Given two enqueued reminders, and a consumer with less than its margin left
    notes(5)
    run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)
    event = records(bodies(queue))

    consumed = fanout.handle_batch(
        event,
        lambda: 10_000,
        now=AT,
        settings=settings,
        mailer=Mailer(SENDER, REGION, client=ses),
    )

    # Then nothing is sent and its record is redelivered
    assert consumed.response() == {"batchItemFailures": [{"itemIdentifier": "m0"}]}
    assert len(sent_emails()) == 3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b.update(v=2), "unknown message version 2"),
        (lambda b: b.update(check="birthdays"), "unknown check 'birthdays'"),
        (lambda b: b.update(business_date="23/11/2026"), "bad date"),
        (lambda b: b.update(enqueued_at="2026-11-23T10:00:00"), "no time zone"),
        (lambda b: b.update(notices=[]), "no notices"),
        (lambda b: b["notices"][0].update(kind="stale_applications"), "is not of check"),
        (lambda b: b["notices"][0]["recipient"].update(email="x\r\nBcc: y"), "no valid email"),
        (lambda b: b["notices"][0].update(parts=[]), "has no parts"),
        (lambda b: b["notices"][0]["parts"][0].update(key="note_reminders#" + "k" * 2100), "key"),
        (lambda b: b["notices"][0]["email"].pop("html"), "html is missing"),
        (lambda b: b["notices"][0].update(recipient=None), "recipient is missing"),
    ],
)
def test_every_malformed_field_makes_a_poison_message_with_its_reason(
    queue: str, change: Any, reason: str
) -> None:
    notes(4)
    run("note_reminders", AT, remaining_ms=lambda: THREE_NOTICES_LEFT)
    [body] = bodies(queue)
    change(body)

    with pytest.raises(fanout.PoisonMessage, match=reason):
        fanout.decode(json.dumps(body))


def test_a_poison_message_is_reported_with_its_id_and_reason(
    settings: Settings, ses: SESV2Client, tables: Settings
) -> None:
    consumed = fanout.handle_batch(
        {"Records": [{"messageId": "bad-1", "body": "[1, 2]"}]},
        now=AT,
        settings=settings,
        mailer=Mailer(SENDER, REGION, client=ses),
    )

    assert consumed.poison == [{"message_id": "bad-1", "reason": "body is not a JSON object"}]
    assert consumed.response() == {"batchItemFailures": [{"itemIdentifier": "bad-1"}]}


def test_a_paced_consumer_waits_for_its_share_of_the_quota_between_sends(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a consumer's mailer paced at 4 messages a second, on a clock the test moves
    now = [100.0]
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    mailer = fanout.PacedMailer(
        SENDER, REGION, rate=4, client=ses, clock=lambda: now[0], sleep=sleep
    )
    email = Email(
        to=Recipient("author-0", "Author 0", "author0@lender.example.com.au"),
        subject="Note Reminder: Call the valuer",
        text="text",
        html="<p>html</p>",
    )

    # When it sends three at once, then one after a long pause
    for _ in range(3):
        mailer.send(email, date=AT)
    now[0] += 10
    mailer.send(email, date=AT)

    # Then it waited a quarter second before the second and third only, and all went out
    assert waits == [0.25, 0.25]
    assert len(sent_emails()) == 4


def test_the_consumer_is_paced_only_where_the_template_sets_its_rate(settings: Settings) -> None:
    assert isinstance(
        fanout.consumer_mailer(settings, {"FANOUT_CONSUMER_RATE": "8"}), fanout.PacedMailer
    )
    assert not isinstance(fanout.consumer_mailer(settings, {}), fanout.PacedMailer)


def test_the_consumer_reads_the_queue_make_deploy_names_else_the_templates_placeholder() -> None:
    assert fanout.queue_name({"FANOUT_QUEUE_NAME": "loan-reminders-dev-fanout"}) == (
        "loan-reminders-dev-fanout"
    )
    assert fanout.queue_name({}) == fanout.QUEUE_PLACEHOLDER


def test_a_fanned_out_escalation_digest_flags_each_of_its_repayments(
    queue: str, settings: Settings, ses: SESV2Client
) -> None:
    # Given Ben's upcoming reminder and two of Brooke's escalations, and time for one email
    factories.crm()
    factories.application()
    factories.application("app-2", reference_number="APP-1002")
    factories.repayment(due_date="2026-11-30")
    factories.repayment("rep-2", due_date="2026-11-13")
    factories.repayment("rep-3", application_id="app-2", due_date="2026-11-12")

    summary = run("repayment_reminders", AT, remaining_ms=lambda: 31_000)

    # Then the run sent Ben's and handed the digest on whole, one notice with two parts
    assert (summary.sent, summary.enqueued) == (1, 2)
    [body] = bodies(queue)
    [notice] = body["notices"]
    assert [p["item_id"] for p in notice["parts"]] == ["rep-2", "rep-3"]
    assert notice["email"]["subject"] == "ESCALATION: 2 Overdue Repayments, 10 to 11 Days"

    # When the consumer sends it
    consumed = fanout.handle_batch(
        records([body]), now=AT, settings=settings, mailer=Mailer(SENDER, REGION, client=ses)
    )

    # Then Brooke has one digest and each escalated repayment is flagged
    assert consumed.response() == {"batchItemFailures": []}
    assert [e.recipients for e in sent_emails()] == [[BEN], [BROOKE]]
    assert [Repayment.get(r).overdue_10_day_sent for r in ("rep-2", "rep-3")] == [True, True]


def test_a_repayment_is_flagged_once_its_fanned_out_notices_are_all_sent(
    queue: str, settings: Settings, ses: SESV2Client
) -> None:
    # Given a repayment due to two borrowers, and time for one notice
    factories.repayment_due_to_two_borrowers()

    summary = run("repayment_reminders", AT, remaining_ms=lambda: 31_000)

    # Then the run sent one, handed one on, and could not flag the repayment yet
    assert (summary.sent, summary.enqueued) == (1, 1)
    assert Repayment.get("rep-1").reminder_sent is None
    [body] = bodies(queue)
    [notice] = body["notices"]
    assert sorted(notice["group"]) == sorted(
        ledger_key("repayment_upcoming", "rep-1", "2026-11-30", borrower)
        for borrower in ("bor-1", "bor-2")
    )

    # When the consumer sends the other
    consumed = fanout.handle_batch(
        records([body]), now=AT, settings=settings, mailer=Mailer(SENDER, REGION, client=ses)
    )

    # Then both borrowers have their reminder and the repayment is flagged
    assert consumed.response() == {"batchItemFailures": []}
    assert len(sent_emails()) == 2
    assert Repayment.get("rep-1").reminder_sent is True


def test_a_repayment_whose_other_notice_is_not_sent_stays_unflagged(
    queue: str, settings: Settings, ses: SESV2Client
) -> None:
    # Given the enqueued half of a repayment's notices, and the run's own half due again
    factories.repayment_due_to_two_borrowers()
    run("repayment_reminders", AT, remaining_ms=lambda: 31_000)
    [body] = bodies(queue)
    [kept] = [k for k in body["notices"][0]["group"] if k != body["notices"][0]["parts"][0]["key"]]
    Notification(kept).update(actions=[Notification.status.set(ledger.PENDING)])

    # When the consumer sends its half
    fanout.handle_batch(
        records([body]), now=AT, settings=settings, mailer=Mailer(SENDER, REGION, client=ses)
    )

    # Then the repayment is not flagged: one notice is still due
    assert Repayment.get("rep-1").reminder_sent is None


def test_a_group_without_the_notices_own_key_is_poison(queue: str) -> None:
    factories.repayment_due_to_two_borrowers()
    run("repayment_reminders", AT, remaining_ms=lambda: 31_000)
    [body] = bodies(queue)
    body["notices"][0]["group"] = ["repayment_reminders#elsewhere"]

    with pytest.raises(fanout.PoisonMessage, match="group"):
        fanout.decode(json.dumps(body))
