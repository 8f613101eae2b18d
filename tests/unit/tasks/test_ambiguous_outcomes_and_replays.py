"""The promises at the edges: lost responses, ambiguous sends, poison retries, replays, time.

Issue 7, classes 3, 4, 5, 7 and 8: a lost DynamoDB response never loses or
duplicates a notice and never aborts a run; an SES outcome that may have been a
delivery is never resent blindly; a notice that keeps failing is given up; an old
event is refused and a repayment's notices only escalate; a run short of time
leaves the rest due; a flag write never resurrects a deleted repayment.
"""

from __future__ import annotations

import base64
import email
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import getaddresses
from typing import Any, cast

import pytest
from mypy_boto3_dynamodb import DynamoDBClient
from mypy_boto3_sesv2 import SESV2Client
from pynamodb.exceptions import DoesNotExist

from chalicelib import ledger, mailer
from chalicelib.checks import note_reminders
from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.models import Notification, Repayment
from chalicelib.runner import EventTooOld, handle_scheduled, run_check
from tests import factories as f
from tests.aws_recorder import another_actor
from tests.factories import BEN, BROOKE, MIA, SAM
from tests.support import (
    REGION,
    SES_ACCOUNT,
    ledger_key,
    lost_responses,
    run,
    sent_emails,
    ses_error,
    ses_faults,
    subjects_by_recipient,
    sydney,
)

pytestmark = [pytest.mark.task, pytest.mark.error_handling]


MONDAY = sydney("2026-11-23 09:00")
NOTE1_SAM = ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2")
REP1_MIA = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")
REP1_BEN = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1")
THROTTLED = ("TooManyRequestsException", 429)


def recipient_counts() -> Counter[str]:
    return Counter(r for sent in sent_emails() for r in sent.recipients)


def entry(key: str) -> Notification:
    return Notification.get(key, consistent_read=True)


def ledger_client() -> DynamoDBClient:
    """The botocore client the ledger's writes go through."""
    # PynamoDB types it as a plain botocore client; it is DynamoDB's.
    return cast("DynamoDBClient", Notification._get_connection().connection.client)


def writes_status(status: str) -> Callable[[dict[str, Any]], bool]:
    """Picks the UpdateItem calls that set the ledger status to ``status``."""

    def pick(body: dict[str, Any]) -> bool:
        return {"S": status} in body.get("ExpressionAttributeValues", {}).values()

    return pick


def first_only(pick: Callable[[dict[str, Any]], bool]) -> Callable[[dict[str, Any]], bool]:
    seen: list[None] = []

    def once(body: dict[str, Any]) -> bool:
        if seen or not pick(body):
            return False
        seen.append(None)
        return True

    return once


@pytest.fixture
def production_ses(service: Settings) -> Iterator[SESV2Client]:
    """The SES client a deployed function uses (its real retry settings), on moto."""
    mailer._default_clients.pop(REGION, None)
    yield mailer.ses_client(REGION)
    mailer._default_clients.pop(REGION, None)


# --- class 4: lost DynamoDB responses ----------------------------------------------------


def test_a_lost_response_to_the_claim_still_sends_the_notice_once(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a note reminder due to Sam and Brooke
    f.note_for_author_and_bdm()

    # When the response to the first claim is lost and botocore sends the claim again
    lose = first_only(writes_status("claimed"))
    with lost_responses(ledger_client(), "UpdateItem", lose) as lost:
        summary = run("note_reminders", MONDAY, ses)

    # Then the run knew the claim for its own: both reminders went out, once each
    assert len(lost) == 1
    assert (summary.sent, summary.skipped, summary.unknown) == (2, 0, 0)
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1})
    assert entry(NOTE1_SAM).status == ledger.SENT
    assert entry(NOTE1_SAM).attempts == 1


def test_a_sent_notice_whose_record_went_unanswered_is_read_again_and_its_repayment_flagged(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 due in a week to Ben and Mia
    f.repayment_due_to_two_borrowers()

    # When every answer to the writes recording Ben's notice sent is lost (each one applied)
    def ben_sent(body: dict[str, Any]) -> bool:
        return body["Key"]["id"] == {"S": REP1_BEN} and writes_status("sent")(body)

    with lost_responses(ledger_client(), "UpdateItem", ben_sent) as lost:
        summary = run("repayment_reminders", MONDAY, ses)

    # Then the run reports the write it got no answer to, reads Ben's entry again, finds
    # it sent, and flags rep-1: both reminders went out once
    assert len(lost) > 1  # botocore retried it
    assert summary.sent == 2
    assert [e for e in summary.errors if e.startswith("recording sent failed")] != []
    assert entry(REP1_BEN).status == ledger.SENT
    assert Repayment.get("rep-1", consistent_read=True).reminder_sent is True
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})


def test_a_claim_held_by_another_run_is_not_taken_for_our_own(
    service: Settings, ses: SESV2Client
) -> None:
    # Given another run claimed Sam's reminder a minute ago, with its own token
    f.note_for_author_and_bdm()
    claimed_at = MONDAY.astimezone(UTC) - timedelta(minutes=1)
    Notification(
        id=NOTE1_SAM,
        kind="note_reminders",
        item_id="note-1",
        recipient_id="staff-2",
        recipient_email=SAM,
        business_date="2026-11-23",
        status=ledger.CLAIMED,
        run_id="other-run",
        send_token="other-token",
        attempts=1,
        created_at=claimed_at,
        updated_at=claimed_at,
        claimed_at=claimed_at,
        lease_expires_at=claimed_at + ledger.CLAIM_LEASE,
    ).save()

    # When this run's claim of it fails its condition
    summary = run("note_reminders", MONDAY, ses)

    # Then it is left to its owner
    assert (summary.sent, summary.skipped) == (1, 1)
    assert recipient_counts() == Counter({BROOKE: 1})
    assert entry(NOTE1_SAM).run_id == "other-run"


def test_a_lost_response_to_a_release_does_not_abort_the_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given SES throttles Sam's reminder, and the response to its release is lost
    f.note_for_author_and_bdm()
    with (
        ses_faults(ses, lambda to: ses_error(*THROTTLED) if to == SAM else None),
        lost_responses(ledger_client(), "UpdateItem", first_only(writes_status("pending"))) as lost,
        pytest.raises(DeliveryIncomplete) as raised,
    ):
        run("note_reminders", MONDAY, ses)

    # Then the release counts as done: Brooke's went out, Sam's is pending for a retry
    assert len(lost) == 1
    assert (raised.value.summary.sent, raised.value.summary.retrying) == (1, 1)
    assert entry(NOTE1_SAM).status == ledger.PENDING

    # And the next run sends Sam's reminder once
    later = run("note_reminders", sydney("2026-11-23 10:00"), ses)
    assert later.sent == 1
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1})


def test_a_lost_response_to_mark_failed_does_not_abort_the_run(
    service: Settings, ses: SESV2Client
) -> None:
    # Given SES rejects Sam's reminder, and the response recording the failure is lost
    f.note_for_author_and_bdm()
    with (
        ses_faults(ses, lambda to: ses_error("MessageRejected", 400) if to == SAM else None),
        lost_responses(ledger_client(), "UpdateItem", first_only(writes_status("failed"))) as lost,
    ):
        summary = run("note_reminders", MONDAY, ses)

    # Then the run finishes normally with the failure recorded once
    assert len(lost) == 1
    assert (summary.sent, summary.failed, summary.retrying) == (1, 1, 0)
    assert entry(NOTE1_SAM).status == ledger.FAILED
    assert "MessageRejected" in (entry(NOTE1_SAM).failure_reason or "")


# --- class 4: ambiguous SES outcomes ------------------------------------------------------


def test_a_lost_ses_response_after_acceptance_is_never_sent_twice(
    production_ses: SESV2Client, stdout_json: Callable[[], list[dict[str, Any]]]
) -> None:
    # Given a note reminder due to Sam and Brooke
    f.note_for_author_and_bdm()

    # When SES accepts Sam's reminder but its response is lost
    def to_sam(body: dict[str, Any]) -> bool:
        return _recipient(body) == SAM

    with lost_responses(production_ses, "SendEmail", to_sam) as lost:
        summary = run("note_reminders", MONDAY)

    # Then SES got it exactly once (no automatic retry), and the entry is unknown
    assert len(lost) == 1
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1})
    assert (summary.sent, summary.unknown, summary.retrying) == (1, 1, 0)
    sam = entry(NOTE1_SAM)
    assert sam.status == ledger.UNKNOWN
    assert "ReadTimeoutError" in (sam.last_error or "")
    assert sam.send_token

    # And Lambda's retries 1 and 3 minutes later, inside the settling window, send nothing
    for minutes in (1, 3):
        run("note_reminders", MONDAY, now=MONDAY + timedelta(minutes=minutes))
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1})


@pytest.mark.parametrize(
    "code_status",
    [("InternalFailure", 500), ("ServiceUnavailable", 503)],
    ids=["500", "503"],
)
def test_an_unsettled_unknown_send_is_due_again_after_the_settling_window(
    service: Settings, ses: SESV2Client, code_status: tuple[str, int]
) -> None:
    # Given SES answered Sam's reminder with a 5xx (it may or may not have accepted it)
    f.note_for_author_and_bdm()
    with ses_faults(ses, lambda to: ses_error(*code_status) if to == SAM else None):
        first = run("note_reminders", MONDAY, ses)
    assert first.unknown == 1
    assert entry(NOTE1_SAM).status == ledger.UNKNOWN

    # When no Send event arrives: 14 minutes later it is still left alone
    early = run("note_reminders", MONDAY, ses, now=MONDAY + timedelta(minutes=14))
    assert early.sent == 0

    # Then after the 15-minute settling window the next run sends it, once
    late = run("note_reminders", sydney("2026-11-23 10:00"), ses)
    assert late.sent == 1
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1})
    assert entry(NOTE1_SAM).status == ledger.SENT
    assert entry(NOTE1_SAM).attempts == 2


def test_an_unknown_send_due_again_waits_for_the_24_hour_quota_like_any_notice(
    service: Settings, ses: SESV2Client
) -> None:
    # Given SES answered Sam's reminder with a 500, and no Send event came
    f.note_for_author_and_bdm()
    with ses_faults(ses, lambda to: ses_error("InternalFailure", 500) if to == SAM else None):
        assert run("note_reminders", MONDAY, ses).unknown == 1

    # When the next run, after the settling window, finds the 24-hour quota spent
    SES_ACCOUNT.sent_last_24_hours = SES_ACCOUNT.max_24_hour_send
    late = run("note_reminders", sydney("2026-11-23 10:00"), ses)

    # Then Sam's reminder is not sent over the quota: it stays due, unclaimed
    assert (late.sent, late.quota_deferred) == (0, 1)
    assert recipient_counts() == Counter({BROOKE: 1})
    assert entry(NOTE1_SAM).status == ledger.UNKNOWN


def test_a_notice_already_sent_is_skipped_not_held_for_a_spent_quota(
    service: Settings, ses: SESV2Client
) -> None:
    # Given Sam's reminder went out and SES throttled Brooke's (left due)
    f.note_for_author_and_bdm()
    with (
        ses_faults(ses, lambda to: ses_error(*THROTTLED) if to == BROOKE else None),
        pytest.raises(DeliveryIncomplete),
    ):
        run("note_reminders", MONDAY, ses)

    # When the next run finds the 24-hour quota spent
    SES_ACCOUNT.sent_last_24_hours = SES_ACCOUNT.max_24_hour_send
    later = run("note_reminders", sydney("2026-11-23 10:00"), ses)

    # Then Sam's is skipped as sent (it needs no email) and only Brooke's waits for quota
    assert (later.skipped, later.quota_deferred, later.sent) == (1, 1, 0)
    assert recipient_counts() == Counter({SAM: 1})


def test_without_ses_events_an_ambiguous_send_is_failed_for_an_operator(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no configuration set publishes SES events
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    f.note_for_author_and_bdm()

    # When SES answers Sam's reminder with a 500
    with ses_faults(ses, lambda to: ses_error("InternalFailure", 500) if to == SAM else None):
        summary = run("note_reminders", MONDAY, ses)

    # Then nothing can settle it, so it is failed (listed by retry-failed), not resent
    assert (summary.sent, summary.failed, summary.unknown) == (1, 1, 0)
    sam = entry(NOTE1_SAM)
    assert sam.status == ledger.FAILED
    assert "may have accepted" in (sam.failure_reason or "")
    assert [e.id for e in ledger.failed_entries()] == [NOTE1_SAM]
    run("note_reminders", sydney("2026-11-23 12:00"), ses)
    assert recipient_counts() == Counter({SAM: 1, BROOKE: 1}) - Counter({SAM: 1})


# --- class 3: a notice failing every run is given up --------------------------------------


def test_a_notice_failing_transiently_max_attempts_times_is_given_up_as_failed(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given SES throttles every send to Sam, and the limit is three attempts
    monkeypatch.setenv("MAX_TRANSIENT_ATTEMPTS", "3")
    f.note_for_author_and_bdm()
    summaries = []
    with ses_faults(ses, lambda to: ses_error(*THROTTLED) if to == SAM else None) as attempted:
        # When three hourly runs try it, and a fourth runs after that
        for hour in ("09", "10"):
            with pytest.raises(DeliveryIncomplete):
                run("note_reminders", sydney(f"2026-11-23 {hour}:00"), ses)
        summaries.append(run("note_reminders", sydney("2026-11-23 11:00"), ses))
        summaries.append(run("note_reminders", sydney("2026-11-23 12:00"), ses))

    # Then the third attempt gives it up as failed without failing the run
    assert attempted.count(SAM) == 3
    assert (summaries[0].failed, summaries[0].retrying) == (1, 0)
    sam = entry(NOTE1_SAM)
    assert sam.status == ledger.FAILED
    assert (sam.failure_reason or "").startswith("gave up after 3 attempts: TooManyRequests")
    assert sam.subject == "Note Reminder: Call the valuer"  # what failed, for the operator
    assert [e.id for e in ledger.failed_entries()] == [NOTE1_SAM]
    # And the fourth run leaves it for an operator
    assert summaries[1].sent == summaries[1].failed == 0


# --- class 5: replays ----------------------------------------------------------------------


def scheduled(at: datetime) -> dict[str, Any]:
    return {
        "id": "replayed-event",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "time": at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def test_a_scheduled_event_older_than_its_horizon_is_refused(service: Settings) -> None:
    # Given a note reminder was due on Monday
    f.note_for_author_and_bdm()

    # When Monday's event is re-driven from the dead-letter queue 25 hours later
    with pytest.raises(EventTooOld, match="older than EVENT_MAX_AGE_HOURS \\(24 h\\)"):
        handle_scheduled("note_reminders", scheduled(MONDAY), now=MONDAY + timedelta(hours=25))

    # Then nothing was sent or claimed
    assert sent_emails() == []
    assert list(Notification.by_item.query("note-1")) == []


def test_a_scheduled_event_inside_its_horizon_still_runs(service: Settings) -> None:
    # Given a note reminder due on Monday, and Monday's event retried 23 hours later
    f.note_for_author_and_bdm()

    # When it is handled
    summary = handle_scheduled(
        "note_reminders", scheduled(MONDAY), now=MONDAY + timedelta(hours=23)
    )

    # Then Monday's reminders go out
    assert summary["sent"] == 2


def test_an_upcoming_reminder_is_never_sent_after_the_overdue_notice(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 (due 30/11) got its overdue notice on 3 December
    f.repayment_due_to_two_borrowers()
    run("repayment_reminders", sydney("2026-12-03 09:00"), ses)
    assert subjects_by_recipient() == {
        BEN: ["OVERDUE Repayment Notice: APP-1001, 3 days overdue"],
        MIA: ["OVERDUE Repayment Notice: APP-1001, 3 days overdue"],
    }

    # When a run for 30 November (inside the upcoming window) happens afterwards
    late = run_check(
        "repayment_reminders",
        at=sydney("2026-11-30 12:00"),
        now=sydney("2026-12-03 10:00"),
    )

    # Then no upcoming reminder follows the overdue notice
    assert late.sent == 0
    assert sum(len(s) for s in subjects_by_recipient().values()) == 2


def test_a_less_severe_notice_is_not_sent_when_a_severer_one_reached_some_borrowers(
    service: Settings, ses: SESV2Client
) -> None:
    # Given the overdue notice reached Ben but was rejected for Mia (so no flag is set)
    f.repayment_due_to_two_borrowers()
    with ses_faults(ses, lambda to: ses_error("MessageRejected", 400) if to == MIA else None):
        run("repayment_reminders", sydney("2026-12-03 09:00"), ses)
    assert not Repayment.get("rep-1").overdue_3_day_sent

    # When a run for 30 November happens afterwards
    late = run_check(
        "repayment_reminders",
        at=sydney("2026-11-30 12:00"),
        now=sydney("2026-12-03 10:00"),
    )

    # Then neither borrower gets the milder upcoming reminder
    assert late.sent == 0
    assert subjects_by_recipient() == {BEN: ["OVERDUE Repayment Notice: APP-1001, 3 days overdue"]}
    with pytest.raises(DoesNotExist):
        Notification.get(REP1_BEN)


# --- class 7: the time budget --------------------------------------------------------------


def test_a_run_short_of_time_stops_claiming_and_leaves_the_rest_due(
    service: Settings, ses: SESV2Client
) -> None:
    # Given two notices due, and a Lambda with 40 s left, then 10 s after the first send
    f.repayment_due_to_two_borrowers()
    left = iter([40_000, 10_000, 10_000])

    # When the run goes through with a 30 s margin
    summary = run("repayment_reminders", MONDAY, ses, remaining_ms=lambda: next(left))

    # Then one notice went out, the other was deferred without being claimed
    assert (summary.sent, summary.deferred) == (1, 1)
    assert len(sent_emails()) == 1
    deferred_key = REP1_MIA if sent_emails()[0].recipients == [BEN] else REP1_BEN
    with pytest.raises(DoesNotExist):
        Notification.get(deferred_key)
    assert not Repayment.get("rep-1").reminder_sent

    # And the next run sends the deferred one, once, and sets the flag
    later = run("repayment_reminders", sydney("2026-11-23 10:00"), ses)
    assert later.sent == 1
    assert recipient_counts() == Counter({BEN: 1, MIA: 1})
    assert Repayment.get("rep-1").reminder_sent is True


# --- class 8: no ghost items ----------------------------------------------------------------


def test_a_repayment_deleted_during_the_run_is_not_recreated_by_its_flag(
    service: Settings, ses: SESV2Client
) -> None:
    # Given a repayment the CRM deletes while its reminders are being sent
    f.repayment_due_to_two_borrowers()

    def delete_repayment(to: str) -> None:
        with another_actor():
            Repayment(id="rep-1").delete()

    # When the run sends and then sets the flag
    with ses_faults(ses, delete_repayment):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then the reminders went out and no ghost repayment holding only a flag appears
    assert summary.sent == 2
    with pytest.raises(DoesNotExist):
        Repayment.get("rep-1")


def _recipient(body: dict[str, Any]) -> str:
    """The To address of a SendEmail request's raw message."""
    message = email.message_from_bytes(base64.b64decode(body["Content"]["Raw"]["Data"]))
    return getaddresses(message.get_all("To", []))[0][1]


# --- class 3: a ledger entry that cannot be read -----------------------------------------


def test_an_unreadable_ledger_entry_is_reported_and_never_sent_over(
    service: Settings, ses: SESV2Client
) -> None:
    # Given note-1's reminder went to Sam, and its ledger entry was then corrupted
    f.note_for_author_and_bdm()
    run("note_reminders", MONDAY, ses)
    item = ledger_client().get_item(
        TableName=Notification.Meta.table_name, Key={"id": {"S": NOTE1_SAM}}
    )
    ledger_client().put_item(
        TableName=Notification.Meta.table_name, Item={**item["Item"], "status": {"N": "1"}}
    )
    # and note-1 is not in the record of settled notes (a settled note's entries are not
    # read again), as for a re-queued reminder
    note_reminders.forget_settled(NOTE1_SAM)

    # When the check runs again that day
    summary = run("note_reminders", MONDAY + timedelta(hours=1), ses)

    # Then the entry is reported by its key, and Sam is not reminded twice
    [reason] = [i["reason"] for i in summary.invalid_items if i["item_id"] == NOTE1_SAM]
    assert reason.startswith("unreadable entry")
    assert recipient_counts()[SAM] == 1
    assert summary.sent == 0
