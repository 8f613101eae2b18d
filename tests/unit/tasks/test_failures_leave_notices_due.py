"""Error handling: SES failures, re-runs and races, malformed CRM items, untrusted text, config.

Issue 2, "Delivery guarantees" and "Bad input": a transient SES failure leaves the
notice due and fails the run after every other notice was tried; a permanent
rejection is recorded and never retried; re-delivered events, retries and
overlapping runs send each notice once; a malformed item is skipped, logged and
counted; CRM text cannot inject HTML or headers; bad settings name the variable.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import Any

import pytest
from botocore.exceptions import EndpointConnectionError
from moto.core.models import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger
from chalicelib.config import ConfigError, Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.models import Notification, Repayment
from chalicelib.run import RunSummary
from tests import factories as f
from tests.factories import BEN, BLAKE, BROOKE, MIA, SAM
from tests.support import (
    REGION,
    SENDER,
    Fault,
    ledger_key,
    run,
    sent_emails,
    ses_error,
    ses_faults,
    subjects_by_recipient,
    sydney,
)

pytestmark = [pytest.mark.task, pytest.mark.error_handling]


MONDAY = sydney("2026-11-23 09:00")
# The factories' repayment: loan APP-1001, due 30/11/2026.
UPCOMING = "Upcoming Repayment Reminder: APP-1001 due 30/11/2026"

# Keys as the checks build them (see chalicelib/checks/*).
REP1_MIA = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")
REP1_BEN = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1")
NOTE1_SAM = ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2")
NOTE1_BROOKE = ledger_key("note_reminders", "note-1", "2026-11-23", "bdm-1")


class LambdaKilled(BaseException):
    """The Lambda runtime killing the function (timeout, OOM): nothing after it runs."""


def ledger_entry(key: str) -> Notification:
    return Notification.get(key, consistent_read=True)


def entries_for(item_id: str) -> list[Notification]:
    return list(Notification.by_item.query(item_id))


def recipient_counts() -> Counter[str]:
    return Counter(r for sent in sent_emails() for r in sent.recipients)


def destinations() -> list[list[str]]:
    """The addresses SES (moto) was asked to deliver each accepted message to."""
    captured = ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages
    return [[addr for _, addr in getaddresses(raw.destinations)] for raw in captured]


def invalid_reasons(summary: RunSummary, item_id: str) -> list[str]:
    return [i["reason"] for i in summary.invalid_items if i["item_id"] == item_id]


def logged_invalid(records: list[dict[str, Any]], item_id: str) -> list[str]:
    """Reasons of the ``skipped invalid item`` log lines about ``item_id``."""
    return [
        r["reason"]
        for r in records
        if r.get("message") == "skipped invalid item" and r.get("item_id") == item_id
    ]


def claim_left_by_another_run(
    key: str, *, lease_expires_at: datetime, run_id: str = "other-run"
) -> None:
    """A ledger entry left ``claimed`` by another run for Mia's upcoming reminder."""
    f.claimed_entry(
        key, recipient_id="bor-2", email=MIA, run_id=run_id, lease_expires_at=lease_expires_at
    )


# SES provably did not take the message: it answered 4xx, or was never reached.
TRANSIENT_FAULTS: list[object] = [
    pytest.param(
        lambda: ses_error("TooManyRequestsException", 429),
        "TooManyRequestsException",
        id="throttled-429",
    ),
    pytest.param(
        lambda: ses_error("SendingPausedException", 400),
        "SendingPausedException",
        id="sending-paused-400",
    ),
    pytest.param(
        lambda: EndpointConnectionError(endpoint_url=f"https://email.{REGION}.amazonaws.com"),
        "EndpointConnectionError",
        id="connection-refused",
    ),
]

PERMANENT_FAULTS: list[object] = [
    pytest.param("MessageRejected", id="message-rejected"),
    pytest.param("BadRequestException", id="bad-request"),
]


# --- transient SES failures -------------------------------------------------------------


@pytest.mark.parametrize(("fault", "reason"), TRANSIENT_FAULTS)
def test_a_transient_failure_sends_the_others_then_fails_the_run(
    service: Settings, ses: SESV2Client, fault: Callable[[], Fault], reason: str
) -> None:
    # Given a repayment due to Ben and Mia, and SES failing transiently for Mia
    f.repayment_due_to_two_borrowers()

    # When the run sends
    with (
        ses_faults(ses, lambda to: fault() if to == MIA else None) as attempted,
        pytest.raises(DeliveryIncomplete) as raised,
    ):
        run("repayment_reminders", MONDAY, ses)

    # Then Ben's notice still went out and Mia's was tried once
    assert sorted(attempted) == [BEN, MIA]
    assert subjects_by_recipient() == {BEN: [UPCOMING]}
    summary = raised.value.summary
    assert (summary.sent, summary.retrying, summary.failed) == (1, 1, 0)
    assert reason in str(raised.value)
    # And Mia's notice is pending with the error, Ben's sent, and the flag is unset
    mia = ledger_entry(REP1_MIA)
    assert mia.status == ledger.PENDING
    assert reason in (mia.last_error or "")
    assert mia.message_id is None
    assert ledger_entry(REP1_BEN).status == ledger.SENT
    assert not Repayment.get("rep-1").reminder_sent


@pytest.mark.parametrize(("fault", "reason"), TRANSIENT_FAULTS)
def test_the_next_run_delivers_a_transiently_failed_notice_exactly_once(
    service: Settings, ses: SESV2Client, fault: Callable[[], Fault], reason: str
) -> None:
    # Given a run in which Mia's notice failed transiently
    f.repayment_due_to_two_borrowers()
    with (
        ses_faults(ses, lambda to: fault() if to == MIA else None),
        pytest.raises(DeliveryIncomplete),
    ):
        run("repayment_reminders", MONDAY, ses)

    # When the next hourly run finds SES healthy again
    with ses_faults(ses, lambda to: None) as attempted:
        summary = run("repayment_reminders", sydney("2026-11-23 10:00"), ses)

    # Then only Mia's notice is sent, once, and the flag is now set
    assert attempted == [MIA]
    assert (summary.sent, summary.retrying) == (1, 0)
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})
    mia = ledger_entry(REP1_MIA)
    assert mia.status == ledger.SENT
    assert mia.message_id in {s.message_id for s in sent_emails() if s.recipients == [MIA]}
    assert mia.attempts == 2
    assert Repayment.get("rep-1").reminder_sent is True

    # And a third run sends nothing more
    run("repayment_reminders", sydney("2026-11-23 11:00"), ses)
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})


def test_a_transient_failure_of_a_note_reminder_leaves_it_due_for_the_next_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note due to Sam and Brooke, and SES throttling Sam
    f.note_for_author_and_bdm()
    with (
        ses_faults(
            ses, lambda to: ses_error("TooManyRequestsException", 429) if to == SAM else None
        ),
        pytest.raises(DeliveryIncomplete),
    ):
        run("note_reminders", MONDAY, ses)
    assert recipient_counts() == Counter({BROOKE: 1})
    assert ledger_entry(NOTE1_SAM).status == ledger.PENDING

    # When the next run goes through
    summary = run("note_reminders", sydney("2026-11-23 10:00"), ses)

    # Then Sam gets the reminder once and Brooke is not reminded again
    assert summary.sent == 1
    assert recipient_counts() == Counter({BROOKE: 1, SAM: 1})
    assert ledger_entry(NOTE1_SAM).status == ledger.SENT


def test_a_transient_failure_releases_every_part_of_a_stale_digest(
    service: Settings, ses: SESV2Client
) -> None:
    # Given Brooke's digest covers two stale applications, Blake's covers one
    f.stale_digest_of_two()
    f.second_bdm()
    f.application("app-3", reference_number="APP-1003", bd_id="bdm-2")

    # When SES throttles the send to Brooke
    with (
        ses_faults(
            ses,
            lambda to: ses_error("TooManyRequestsException", 429) if to == BROOKE else None,
        ),
        pytest.raises(DeliveryIncomplete) as raised,
    ):
        run("stale_applications", MONDAY, ses)

    # Then Blake's digest went out, and both parts of Brooke's digest are pending again
    assert subjects_by_recipient() == {BLAKE: ["Stale Application Alert: APP-1003"]}
    assert raised.value.summary.retrying == 2
    for app_id in ("app-1", "app-2"):
        [entry] = entries_for(app_id)
        assert entry.status == ledger.PENDING
        assert "TooManyRequestsException" in (entry.last_error or "")

    # When the next run goes through
    summary = run("stale_applications", sydney("2026-11-23 10:00"), ses)

    # Then Brooke gets the whole digest once, and nobody gets anything twice
    assert summary.emails_sent == 1
    assert subjects_by_recipient() == {
        BLAKE: ["Stale Application Alert: APP-1003"],
        BROOKE: ["Stale Application Alert: 2 applications"],
    }
    [digest] = [s for s in sent_emails() if s.recipients == [BROOKE]]
    assert "APP-1001" in digest.text
    assert "APP-1002" in digest.text
    for app_id in ("app-1", "app-2"):
        [entry] = entries_for(app_id)
        assert entry.status == ledger.SENT
        assert entry.message_id == digest.message_id


# --- permanent SES rejections -------------------------------------------------------------


@pytest.mark.parametrize("code", PERMANENT_FAULTS)
def test_a_permanent_rejection_is_recorded_as_failed_and_the_run_succeeds(
    service: Settings, ses: SESV2Client, code: str
) -> None:
    # Given SES rejects the message to Mia outright
    f.repayment_due_to_two_borrowers()
    with ses_faults(
        ses, lambda to: ses_error(code, 400, "Email address is not verified") if to == MIA else None
    ):
        # When the run sends (it does not raise)
        summary = run("repayment_reminders", MONDAY, ses)

    # Then Ben's notice went out and Mia's is failed with the reason
    assert subjects_by_recipient() == {BEN: [UPCOMING]}
    assert (summary.sent, summary.failed, summary.retrying) == (1, 1, 0)
    mia = ledger_entry(REP1_MIA)
    assert mia.status == ledger.FAILED
    assert code in (mia.failure_reason or "")
    assert "Email address is not verified" in (mia.failure_reason or "")
    assert mia.subject == UPCOMING
    assert mia.message_id is None
    assert ledger_entry(REP1_BEN).status == ledger.SENT


@pytest.mark.parametrize("code", PERMANENT_FAULTS)
def test_a_permanently_rejected_notice_is_not_retried(
    service: Settings, ses: SESV2Client, code: str
) -> None:
    # Given Mia's notice was rejected permanently
    f.repayment_due_to_two_borrowers()
    with ses_faults(ses, lambda to: ses_error(code, 400) if to == MIA else None):
        run("repayment_reminders", MONDAY, ses)

    # When later runs (this afternoon, and tomorrow, still in the upcoming window) go through
    with ses_faults(ses, lambda to: None) as attempted:
        later = run("repayment_reminders", sydney("2026-11-23 15:00"), ses)
        tomorrow = run("repayment_reminders", sydney("2026-11-24 09:00"), ses)

    # Then nothing is sent to Mia again, and the entry stays failed
    assert attempted == []
    assert later.sent == tomorrow.sent == 0
    assert recipient_counts() == Counter({BEN: 1})
    mia = ledger_entry(REP1_MIA)
    assert mia.status == ledger.FAILED
    assert mia.attempts == 1


# --- re-delivered events and retries ------------------------------------------------------


def crm_with_one_notice_of_each_check() -> None:
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.note()
    f.repayment()


@pytest.mark.parametrize(
    ("check", "expected"),
    [
        ("stale_applications", Counter({BROOKE: 1})),
        ("note_reminders", Counter({SAM: 1, BROOKE: 1})),
        ("repayment_reminders", Counter({BEN: 1, MIA: 1})),
    ],
)
def test_a_redelivered_event_sends_each_notice_once(
    service: Settings, ses: SESV2Client, check: str, expected: Counter[str]
) -> None:
    # Given a CRM with notices due for every check
    crm_with_one_notice_of_each_check()

    # When EventBridge delivers the same event twice (the second a Lambda retry minutes later)
    first = run(check, MONDAY, ses)
    second = run(check, MONDAY, ses, now=MONDAY + timedelta(minutes=3))

    # Then every notice went out exactly once
    assert recipient_counts() == expected
    assert first.sent == sum(expected.values())
    assert second.sent == 0


def test_a_retry_after_a_partly_failed_run_sends_only_what_is_missing(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a run that failed transiently for Mia (so Lambda retries the same event)
    f.repayment_due_to_two_borrowers()
    with (
        ses_faults(
            ses, lambda to: ses_error("TooManyRequestsException", 429) if to == MIA else None
        ),
        pytest.raises(DeliveryIncomplete),
    ):
        run("repayment_reminders", MONDAY, ses)

    # When Lambda retries the same event a minute later
    summary = run("repayment_reminders", MONDAY, ses, now=MONDAY + timedelta(minutes=1))

    # Then Mia gets hers and Ben does not get a second one
    assert (summary.sent, summary.skipped) == (1, 1)
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})
    assert Repayment.get("rep-1").reminder_sent is True


# --- concurrent runs ---------------------------------------------------------------------


def test_a_run_overlapping_another_does_not_send_the_notice_in_flight(
    service: Settings, ses: SESV2Client
) -> None:
    # Given one note reminder due, to Sam only (no BDM on the application)
    f.crm()
    f.application(bd_id=None)
    f.note()
    overlapping: list[Any] = []

    def start_run_b_while_a_sends(to: str) -> None:
        if not overlapping:
            overlapping.append(None)
            overlapping[0] = run("note_reminders", MONDAY, ses)
        return None

    # When run B starts while run A is sending Sam's reminder
    with ses_faults(ses, start_run_b_while_a_sends) as attempted:
        run_a = run("note_reminders", MONDAY, ses)

    # Then B saw A's claim and sent nothing; Sam got one email
    run_b = overlapping[0]
    assert (run_b.sent, run_b.skipped) == (0, 1)
    assert run_a.sent == 1
    assert attempted == [SAM]
    assert recipient_counts() == Counter({SAM: 1})
    assert ledger_entry(NOTE1_SAM).run_id == run_a.run_id


def test_overlapping_runs_send_each_notice_once_in_total(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Run A sends one notice at a time, so run B starts while A's other notices are still
    # unclaimed (A's workers would claim them all first). Races between concurrent
    # senders: tests/ddblocal/test_concurrent_sending.py.
    monkeypatch.setenv("SEND_CONCURRENCY", "1")
    # Given a repayment due to three borrowers
    f.crm(borrowers=3)
    f.application(borrower_ids=["bor-1", "bor-2", "bor-3"])
    f.repayment()
    overlapping: list[Any] = []

    def start_run_b_while_a_sends(to: str) -> None:
        if not overlapping:
            overlapping.append(None)
            overlapping[0] = run("repayment_reminders", MONDAY, ses)
        return None

    # When run B starts while run A is sending its first notice
    with ses_faults(ses, start_run_b_while_a_sends):
        run_a = run("repayment_reminders", MONDAY, ses)

    # Then B skipped A's in-flight notice, and together they sent each notice once
    run_b = overlapping[0]
    assert run_b.skipped >= 1
    assert run_a.sent + run_b.sent == 3
    assert recipient_counts() == Counter({BEN: 1, MIA: 1, "ava.nguyen@example.net": 1})
    assert {e.status for e in entries_for("rep-1")} == {ledger.SENT}

    # And the next run sends nothing more and records the repayment as reminded
    # (neither overlapping run saw all three sent, so neither could set the flag).
    after = run("repayment_reminders", sydney("2026-11-23 10:00"), ses)
    assert after.sent == 0
    assert recipient_counts() == Counter({BEN: 1, MIA: 1, "ava.nguyen@example.net": 1})
    assert Repayment.get("rep-1").reminder_sent is True


def test_an_unexpired_claim_of_another_run_is_skipped(service: Settings, ses: SESV2Client) -> None:
    # Given another run claimed Mia's notice a minute ago and is still within its lease
    f.repayment_due_to_two_borrowers()
    lease = MONDAY.astimezone(UTC) + ledger.CLAIM_LEASE - timedelta(minutes=1)
    claim_left_by_another_run(REP1_MIA, lease_expires_at=lease)

    # When this run goes through
    summary = run("repayment_reminders", MONDAY, ses)

    # Then Mia's notice is left to its owner: not sent, claim untouched, flag not set
    assert recipient_counts() == Counter({BEN: 1})
    assert (summary.sent, summary.skipped, summary.failed) == (1, 1, 0)
    mia = ledger_entry(REP1_MIA)
    assert (mia.status, mia.run_id, mia.attempts) == (ledger.CLAIMED, "other-run", 1)
    assert not Repayment.get("rep-1").reminder_sent


def test_without_ses_events_an_expired_claim_is_marked_failed_as_interrupted_and_not_resent(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no configuration set publishes SES events, so nothing can settle a claim
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    # And a run claimed Mia's notice an hour ago and died (its lease has run out)
    f.repayment_due_to_two_borrowers()
    lease = MONDAY.astimezone(UTC) - timedelta(minutes=45)
    claim_left_by_another_run(REP1_MIA, lease_expires_at=lease, run_id="crashed-run")

    # When this run goes through
    summary = run("repayment_reminders", MONDAY, ses)

    # Then Mia gets nothing (SES may already have delivered it) and the entry is failed
    assert recipient_counts() == Counter({BEN: 1})
    assert (summary.sent, summary.failed) == (1, 1)
    mia = ledger_entry(REP1_MIA)
    assert mia.status == ledger.FAILED
    assert mia.failure_reason == ledger.INTERRUPTED
    assert "interrupted" in mia.failure_reason
    assert "crashed-run" in (mia.last_error or "")

    # And a later run leaves it alone
    again = run("repayment_reminders", sydney("2026-11-23 11:00"), ses)
    assert (again.sent, again.failed) == (0, 0)
    assert recipient_counts() == Counter({BEN: 1})


def test_without_ses_events_a_run_killed_after_ses_accepted_the_message_is_not_resent(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no configuration set publishes SES events, so nothing can settle a claim
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    # And a run that is killed right after SES accepted its first reminder (one send at a
    # time, as a real kill stops every thread and this one stops only its own)
    monkeypatch.setenv("SEND_CONCURRENCY", "1")
    f.note_for_author_and_bdm()

    def kill_after_sam(
        http_response: object = None, parsed: dict[str, object] | None = None, **_: object
    ) -> None:
        if "MessageId" in (parsed or {}) and len(sent_emails()) == 1:
            raise LambdaKilled

    ses.meta.events.register("after-call.sesv2.SendEmail", kill_after_sam)
    try:
        with pytest.raises(LambdaKilled):
            run("note_reminders", MONDAY, ses)
    finally:
        ses.meta.events.unregister("after-call.sesv2.SendEmail", kill_after_sam)
    [delivered] = sent_emails()
    # Whichever reminder went first is the one SES accepted before the kill.
    killed_key = NOTE1_SAM if delivered.recipients == [SAM] else NOTE1_BROOKE
    assert ledger_entry(killed_key).status == ledger.CLAIMED

    # When Lambda retries a minute later (lease still held), then the next hour's run
    retry = run("note_reminders", MONDAY, ses, now=MONDAY + timedelta(minutes=1))
    later = run("note_reminders", sydney("2026-11-23 10:00"), ses)

    # Then the killed notice is never sent again, the other one is sent once
    assert retry.sent == 1
    assert later.sent == 0
    assert later.failed == 1
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1})
    entry = ledger_entry(killed_key)
    assert entry.status == ledger.FAILED
    assert entry.failure_reason == ledger.INTERRUPTED


# --- malformed CRM items -----------------------------------------------------------------


def test_a_repayment_without_an_amount_is_skipped_and_the_others_sent(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given rep-bad has no amount, next to a healthy rep-1
    f.repayment_due_to_two_borrowers()
    f.repayment("rep-bad", amount=None)

    # When the run goes through
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-bad is reported with the reason, and rep-1 still goes to both borrowers
    assert invalid_reasons(summary, "rep-bad") == ["amount is missing"]
    assert summary.invalid == 1
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})
    assert entries_for("rep-bad") == []
    assert not Repayment.get("rep-bad").reminder_sent
    # And a structured log line names the item and the reason
    assert logged_invalid(stdout_json(), "rep-bad") == ["amount is missing"]


def test_a_repayment_whose_amount_is_a_string_is_skipped(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given rep-bad stores its amount as the string "lots" (the model cannot read it)
    f.repayment_due_to_two_borrowers()
    f.raw_item(
        "test-repayments",
        {
            "id": {"S": "rep-bad"},
            "application_id": {"S": "app-1"},
            "amount": {"S": "lots"},
            "due_date": {"S": "2026-11-30"},
        },
    )

    # When the run goes through (it does not crash on the query page)
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-bad is reported, and rep-1 still goes out
    [reason] = invalid_reasons(summary, "rep-bad")
    assert "amount" in reason
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})
    assert entries_for("rep-bad") == []
    assert logged_invalid(stdout_json(), "rep-bad") == [reason]


@pytest.mark.parametrize(
    ("stage_last_updated", "reason"),
    [
        pytest.param("2026-01-05", "has no UTC offset", id="no-offset"),
        pytest.param("2026-01-0X 10:00", "is not an ISO-8601 datetime", id="garbled"),
    ],
)
def test_an_application_with_a_bad_stage_timestamp_is_skipped(
    service: Settings,
    ses: SESV2Client,
    stdout_json: Callable[[], list[dict[str, Any]]],
    stage_last_updated: str,
    reason: str,
) -> None:
    # Given app-bad's stage_last_updated is unreadable, next to a healthy stale app-1
    f.crm()
    f.application()
    f.application("app-bad", reference_number="APP-BAD", stage_last_updated=stage_last_updated)

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then app-bad is reported and skipped, and app-1 is still alerted
    [found] = invalid_reasons(summary, "app-bad")
    assert reason in found
    assert stage_last_updated in found
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}
    assert "APP-BAD" not in sent_emails()[0].text
    assert entries_for("app-bad") == []
    assert logged_invalid(stdout_json(), "app-bad") == [found]


def test_a_note_on_a_missing_application_is_skipped(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given note-bad points at an application that does not exist
    f.note_for_author_and_bdm()
    f.note("note-bad", title="Orphan", application_id="app-missing")

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then note-bad is reported and note-1 still goes to Sam and Brooke
    assert invalid_reasons(summary, "note-bad") == ["application 'app-missing' does not exist"]
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1})
    assert all("Orphan" not in s.subject for s in sent_emails())
    assert logged_invalid(stdout_json(), "note-bad") == ["application 'app-missing' does not exist"]


def test_an_application_whose_bdm_does_not_exist_is_skipped(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given stale app-2's bd_id points at nobody, next to a healthy stale app-1
    f.crm()
    f.application()
    f.application("app-2", reference_number="APP-1002", bd_id="bdm-ghost")

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then app-2 is reported and app-1 is still alerted to Brooke
    [reason] = invalid_reasons(summary, "app-2")
    assert "bdm-ghost" in reason
    assert "does not exist" in reason
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}
    assert logged_invalid(stdout_json(), "app-2") == [reason]


def test_a_repayment_escalation_to_a_missing_bdm_is_skipped(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-late (12 days overdue) is on app-2 whose BDM does not exist
    f.crm(borrowers=2)
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.repayment()
    f.application("app-2", reference_number="APP-1002", bd_id="bdm-ghost")
    f.repayment("rep-late", application_id="app-2", due_date="2026-11-11")

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-late is reported, and rep-1's reminders still go out
    [reason] = invalid_reasons(summary, "rep-late")
    assert "bdm-ghost" in reason
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})
    assert not Repayment.get("rep-late").overdue_10_day_sent


def test_a_dangling_borrower_id_is_skipped_and_the_other_borrower_reminded(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given app-1 lists Ben and a borrower id that does not exist
    f.crm()
    f.application(borrower_ids=["bor-1", "bor-ghost"])
    f.repayment()

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then the dangling id is reported against the repayment, and Ben is still reminded
    [reason] = invalid_reasons(summary, "rep-1")
    assert "bor-ghost" in reason
    assert "does not exist" in reason
    assert subjects_by_recipient() == {BEN: [UPCOMING]}
    assert logged_invalid(stdout_json(), "rep-1") == [reason]


def test_a_staff_member_without_an_email_is_skipped_and_the_bdm_still_reminded(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given note-2 was written by staff-3, who has no email address
    f.note_for_author_and_bdm()
    f.staff("staff-3", "Nora Nomail", email=None)
    f.note("note-2", title="Check the ILOO", created_by="staff-3")

    # When the note check runs
    summary = run("note_reminders", MONDAY, ses)

    # Then the author is reported, and Brooke still gets both reminders, Sam his one
    [reason] = invalid_reasons(summary, "note-2")
    assert "staff-3" in reason
    assert "email" in reason
    received = {to: sorted(subjects) for to, subjects in subjects_by_recipient().items()}
    assert received == {
        SAM: ["Note Reminder: Call the valuer"],
        BROOKE: ["Note Reminder: Call the valuer", "Note Reminder: Check the ILOO"],
    }
    assert logged_invalid(stdout_json(), "note-2") == [reason]


def test_a_borrower_with_an_invalid_email_is_skipped_and_the_other_reminded(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given Mia's email is "not-an-email"
    f.crm()
    f.borrower("bor-2", "Mia Chen", "not-an-email")
    f.application(borrower_ids=["bor-1", "bor-2"])
    f.repayment()

    # When the repayment check runs
    summary = run("repayment_reminders", MONDAY, ses)

    # Then Mia is reported against the repayment and never addressed; Ben is reminded
    [reason] = invalid_reasons(summary, "rep-1")
    assert "bor-2" in reason
    assert "email" in reason
    assert subjects_by_recipient() == {BEN: [UPCOMING]}
    assert all("not-an-email" not in d for ds in destinations() for d in ds)
    assert logged_invalid(stdout_json(), "rep-1") == [reason]


def test_an_application_without_a_reference_number_is_skipped(
    service: Settings, ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given stale app-2 has no reference_number, next to a healthy stale app-1
    f.crm()
    f.application()
    f.application("app-2", reference_number=None)

    # When the stale check runs
    summary = run("stale_applications", MONDAY, ses)

    # Then app-2 is reported, and Brooke's digest lists only app-1
    assert invalid_reasons(summary, "app-2") == ["reference_number is missing"]
    assert subjects_by_recipient() == {BROOKE: ["Stale Application Alert: APP-1001"]}
    assert entries_for("app-2") == []
    assert logged_invalid(stdout_json(), "app-2") == ["reference_number is missing"]


def test_many_malformed_items_in_one_run_are_all_counted(
    service: Settings, ses: SESV2Client
) -> None:
    # Given several bad repayments next to a healthy one
    f.repayment_due_to_two_borrowers()
    f.repayment("rep-noamount", amount=None)
    f.repayment("rep-noapp", application_id="app-missing")
    f.raw_item(
        "test-repayments",
        {"id": {"S": "rep-string"}, "amount": {"S": "lots"}, "due_date": {"S": "2026-11-30"}},
    )

    # When the run goes through
    summary = run("repayment_reminders", MONDAY, ses)

    # Then each is reported once and the healthy notices still go out
    assert sorted(i["item_id"] for i in summary.invalid_items) == [
        "rep-noamount",
        "rep-noapp",
        "rep-string",
    ]
    assert summary.invalid == 3
    assert summary.items_read == 4
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})


# --- untrusted CRM text ------------------------------------------------------------------


def test_html_in_a_note_title_is_escaped_in_the_html_part_only(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note title and content with markup and an ampersand
    f.crm()
    f.application(bd_id=None)
    f.note(
        title="<script>alert(1)</script> Smith & Co",
        content="<img src=x onerror=alert(2)> Tom & Jerry",
    )

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then the HTML part carries the escaped text, the text part the readable one
    [sent] = sent_emails()
    assert "<script>" not in sent.html
    assert "<img" not in sent.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Smith &amp; Co" in sent.html
    assert "&lt;img src=x onerror=alert(2)&gt; Tom &amp; Jerry" in sent.html
    assert "<script>alert(1)</script> Smith & Co" in sent.text
    assert "<img src=x onerror=alert(2)> Tom & Jerry" in sent.text
    assert sent.subject == "Note Reminder: <script>alert(1)</script> Smith & Co"


def test_a_title_with_crlf_cannot_add_headers_or_recipients(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note title that tries to smuggle in a Bcc header
    f.crm()
    f.application()
    f.note(title="Call the valuer\r\nBcc: attacker@evil.example\r\n\r\n<b>body</b>")

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then each message has one To, no Bcc/Cc, and a one-line Subject
    emails = sent_emails()
    assert sorted(r for s in emails for r in s.recipients) == sorted([SAM, BROOKE])
    for sent in emails:
        headers = {k.lower() for k in sent.message}
        assert "bcc" not in headers
        assert "cc" not in headers
        assert len(sent.message.get_all("To", [])) == 1
        assert "\r" not in sent.subject
        assert "\n" not in sent.subject
        assert sent.subject.startswith("Note Reminder: Call the valuer")
    # And SES was asked to deliver only to the intended recipients
    assert sorted(d for ds in destinations() for d in ds) == sorted([SAM, BROOKE])
    assert recipient_counts()["attacker@evil.example"] == 0


def test_a_staff_name_with_crlf_does_not_break_the_to_header(
    service: Settings, ses: SESV2Client
) -> None:
    # Given the note author's name contains CR/LF and a header
    f.crm(author=False)
    f.staff("staff-2", "Sam Author\r\nBcc: attacker@evil.example", SAM)
    f.application(bd_id=None)
    f.note()

    # When the note check runs
    run("note_reminders", MONDAY, ses)

    # Then the message goes to Sam alone, with a single intact To header
    [sent] = sent_emails()
    assert sent.recipients == [SAM]
    assert "bcc" not in {k.lower() for k in sent.message}
    [to] = sent.message.get_all("To", [])
    assert "\n" not in str(to)
    assert "\r" not in str(to)
    assert SAM in str(to)
    assert destinations() == [[SAM]]


# --- bad configuration -------------------------------------------------------------------


def environment(**changes: str | None) -> dict[str, str]:
    """The test stage's environment with ``changes`` applied (``None`` removes a variable)."""
    env = dict(os.environ)
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def test_the_test_environment_is_valid_configuration() -> None:
    settings = Settings.from_env(environment())
    assert settings.sender_email == SENDER
    assert settings.tables.notifications == "test-notifications"


@pytest.mark.parametrize(
    ("changes", "variable"),
    [
        pytest.param({"NOTES_TABLE": None}, "NOTES_TABLE", id="missing-table"),
        pytest.param({"NOTIFICATIONS_TABLE": "  "}, "NOTIFICATIONS_TABLE", id="blank-table"),
        pytest.param({"STALE_AFTER_DAYS": "fourteen"}, "STALE_AFTER_DAYS", id="word-threshold"),
        pytest.param({"OVERDUE_DAYS": "3.5"}, "OVERDUE_DAYS", id="fractional-threshold"),
        pytest.param(
            {"BUSINESS_TIMEZONE": "Australia/Gotham"}, "BUSINESS_TIMEZONE", id="unknown-zone"
        ),
        pytest.param({"NOTE_REMINDERS_START": "8am"}, "NOTE_REMINDERS_START", id="bad-start"),
        pytest.param({"BUSINESS_DAY_END": "25:00"}, "BUSINESS_DAY_END", id="bad-end"),
    ],
)
def test_bad_configuration_fails_naming_the_variable(
    changes: dict[str, str | None], variable: str
) -> None:
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env(environment(**changes))
