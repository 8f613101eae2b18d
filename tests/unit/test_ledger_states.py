"""The delivery ledger as a state machine: every state, every transition, every refusal.

``ledger.state`` classifies an entry; the write functions move it (claim, mark_sent,
mark_failed, mark_unknown, release, abandon, requeue) and SES's events settle it
(``ses_events.record_event``). Each test stores an entry, applies one transition and
reads the item back as DynamoDB holds it, so it runs unchanged on DynamoDB Local.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

import pytest
from mypy_boto3_dynamodb import DynamoDBClient
from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef
from pynamodb.exceptions import UpdateError

from chalicelib import ledger, models, registry, ses_events, suppression
from chalicelib.config import Settings
from chalicelib.models import UNREADABLE, Notification
from chalicelib.ses_events import SesEvent
from tests.factories import SAM
from tests.support import lost_responses, ses_client, utc

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

NOW = utc("2026-11-22 22:00")
CREATED = utc("2026-11-20 22:00")
SETTLE = timedelta(minutes=15)
NOTE_REMINDER = registry.kind("note_reminders")
KEY = NOTE_REMINDER.key("note-1", "2026-11-23", "staff-2")
RUN = "run-1"
OTHER_RUN = "run-2"
TOKEN = "token-1"
NEW_TOKEN = "token-2"


@pytest.fixture
def ledger_table(aws: None, settings: Settings) -> Settings:
    """Only the ledger's table (with its indexes): these tests read no CRM table."""
    models.bind(settings)
    Notification.create_table(wait=True)
    return settings


def minutes_ago(minutes: int) -> datetime:
    return NOW - timedelta(minutes=minutes)


def put(
    status: str,
    *,
    run_id: str = RUN,
    token: str = TOKEN,
    claimed: datetime | None = None,
    updated: datetime | None = None,
    **extra: Any,
) -> Notification:
    """Store Sam's note-1 reminder in ``status``, claimed ``claimed`` (5 minutes ago)."""
    claimed_at = claimed or minutes_ago(5)
    entry = Notification(
        id=KEY,
        kind=NOTE_REMINDER.name,
        item_id="note-1",
        recipient_id="staff-2",
        recipient_email=SAM,
        business_date="2026-11-23",
        status=status,
        run_id=run_id,
        attempts=1,
        created_at=CREATED,
        claimed_at=claimed_at,
        updated_at=updated or claimed_at,
        lease_expires_at=claimed_at + ledger.CLAIM_LEASE,
        send_token=token,
        **extra,
    )
    entry.save()
    return entry


def put_unreadable() -> None:
    """Store the entry with a status of the wrong DynamoDB type (a corrupted item)."""
    put(ledger.SENT)
    item = raw()
    assert item is not None
    ledger_client().put_item(
        TableName=Notification.Meta.table_name, Item={**item, "status": {"N": "1"}}
    )


def ledger_client() -> DynamoDBClient:
    """The botocore client the ledger's writes go through."""
    # PynamoDB types it as a plain botocore client; it is DynamoDB's.
    return cast("DynamoDBClient", Notification._get_connection().connection.client)


def raw() -> dict[str, AttributeValueTypeDef] | None:
    """The entry exactly as DynamoDB stores it, or None."""
    item: dict[str, AttributeValueTypeDef] | None = (
        ledger_client()
        .get_item(
            TableName=Notification.Meta.table_name, Key={"id": {"S": KEY}}, ConsistentRead=True
        )
        .get("Item")
    )
    return item


def stored() -> dict[str, Any]:
    """The entry's attributes as stored."""
    return dict(Notification.get(KEY, consistent_read=True).attribute_values)


def read_back() -> Notification | None:
    """The entry as a run reads it (BatchGetItem), or None when there is none."""
    return ledger.lookup([KEY]).get(KEY)


def first_call() -> Callable[[dict[str, Any]], bool]:
    """Picks only the first call: its answer is lost, botocore's retry is answered."""
    calls: list[None] = []

    def pick(body: dict[str, Any]) -> bool:
        calls.append(None)
        return len(calls) == 1

    return pick


def claim_of(token: str | None = NEW_TOKEN) -> ledger.Claim:
    return ledger.Claim(
        key=KEY,
        kind=NOTE_REMINDER.name,
        item_id="note-1",
        recipient_id="staff-2",
        recipient_email=SAM,
        business_date="2026-11-23",
        send_token=token,
    )


# --- ledger.state: what a run makes of each entry ----------------------------------------

Given = Callable[[], object]

STATES: list[object] = [
    # id, given, settle, state, a new claim succeeds
    pytest.param(lambda: None, None, ledger.PENDING, True, id="no-entry"),
    pytest.param(lambda: None, SETTLE, ledger.PENDING, True, id="no-entry-settle"),
    pytest.param(lambda: put(ledger.PENDING), None, ledger.PENDING, True, id="pending"),
    pytest.param(lambda: put(ledger.CLAIMED), None, ledger.IN_FLIGHT, False, id="claim-live"),
    pytest.param(
        lambda: put(ledger.CLAIMED), SETTLE, ledger.IN_FLIGHT, False, id="claim-live-settle"
    ),
    pytest.param(
        lambda: put(ledger.CLAIMED, claimed=minutes_ago(14)),
        None,
        ledger.IN_FLIGHT,
        False,
        id="claim-lease-ends-in-a-minute",
    ),
    pytest.param(
        lambda: put(ledger.CLAIMED, claimed=minutes_ago(15)),
        None,
        ledger.ABANDONED,
        False,
        id="claim-lease-ends-now",
    ),
    pytest.param(
        lambda: put(ledger.CLAIMED, claimed=minutes_ago(20)),
        None,
        ledger.ABANDONED,
        False,
        id="claim-expired-no-events",
    ),
    pytest.param(
        lambda: put(ledger.CLAIMED, claimed=minutes_ago(20)),
        SETTLE,
        ledger.PENDING,
        True,
        id="claim-expired-after-window",
    ),
    pytest.param(
        lambda: put(ledger.CLAIMED, claimed=minutes_ago(15)),
        timedelta(minutes=5),
        ledger.PENDING,
        True,
        id="claim-lease-ends-now-after-window",
    ),
    pytest.param(
        lambda: put(ledger.CLAIMED, claimed=minutes_ago(20)),
        timedelta(minutes=20),
        ledger.PENDING,
        True,
        id="claim-expired-window-ends-now",
    ),
    pytest.param(
        lambda: put(ledger.CLAIMED, claimed=minutes_ago(20)),
        timedelta(minutes=30),
        ledger.IN_FLIGHT,
        False,
        id="claim-expired-inside-window",
    ),
    pytest.param(
        lambda: put(ledger.UNKNOWN, updated=minutes_ago(20)),
        SETTLE,
        ledger.PENDING,
        True,
        id="unknown-after-window",
    ),
    pytest.param(
        lambda: put(ledger.UNKNOWN, updated=minutes_ago(15)),
        SETTLE,
        ledger.PENDING,
        True,
        id="unknown-window-ends-now",
    ),
    pytest.param(
        lambda: put(ledger.UNKNOWN, updated=minutes_ago(14)),
        SETTLE,
        ledger.UNKNOWN,
        False,
        id="unknown-inside-window",
    ),
    pytest.param(
        lambda: put(ledger.UNKNOWN, updated=minutes_ago(60)),
        None,
        ledger.UNKNOWN,
        False,
        id="unknown-no-events",
    ),
    pytest.param(lambda: put(ledger.SENT), None, ledger.SENT, False, id="sent"),
    pytest.param(
        lambda: put(ledger.SENT, claimed=minutes_ago(60)),
        SETTLE,
        ledger.SENT,
        False,
        id="sent-long-ago-settle",
    ),
    pytest.param(lambda: put(ledger.FAILED), None, ledger.FAILED, False, id="failed"),
    pytest.param(
        lambda: put(ledger.FAILED, claimed=minutes_ago(60)),
        SETTLE,
        ledger.FAILED,
        False,
        id="failed-long-ago-settle",
    ),
    pytest.param(put_unreadable, None, UNREADABLE, False, id="unreadable"),
    pytest.param(put_unreadable, SETTLE, UNREADABLE, False, id="unreadable-settle"),
]


@pytest.mark.parametrize(("given", "settle", "expected", "claimable"), STATES)
def test_each_stored_entry_is_classified_by_its_status_lease_and_settling_window(
    ledger_table: Settings, given: Given, settle: timedelta | None, expected: str, claimable: bool
) -> None:
    # Given the entry as stored
    given()

    # When a run reads and classifies it
    found = ledger.state(read_back(), NOW, settle)

    # Then it is classified by its status, its lease and the settling window
    assert found == expected


@pytest.mark.parametrize(("given", "settle", "expected", "claimable"), STATES)
def test_a_claim_succeeds_exactly_when_the_entry_is_classified_pending(
    ledger_table: Settings, given: Given, settle: timedelta | None, expected: str, claimable: bool
) -> None:
    # Given the entry as stored
    given()
    before = raw()

    # When another run claims it
    claimed = ledger.claim(claim_of(), OTHER_RUN, NOW, settle)

    # Then the conditional write agrees with the classification
    assert claimed is claimable
    if not claimable:
        assert raw() == before
        return
    after = stored()
    assert after["status"] == ledger.CLAIMED
    assert after["run_id"] == OTHER_RUN
    assert after["send_token"] == NEW_TOKEN
    assert after["claimed_at"] == NOW
    assert after["updated_at"] == NOW
    assert after["lease_expires_at"] == NOW + ledger.CLAIM_LEASE
    # A first claim creates the entry; a later one keeps its creation time and counts up.
    assert (after["created_at"], after["attempts"]) == (
        (NOW, 1) if before is None else (CREATED, 2)
    )


# --- claim -------------------------------------------------------------------------------


def test_a_first_claim_records_who_gets_what_for_which_item(ledger_table: Settings) -> None:
    # Given no entry
    # When a run claims the notice
    assert ledger.claim(claim_of(), RUN, NOW)

    # Then the entry records the notice, the recipient and the claim
    assert stored() == {
        "id": KEY,
        "kind": NOTE_REMINDER.name,
        "item_id": "note-1",
        "recipient_id": "staff-2",
        "recipient_email": SAM,
        "business_date": "2026-11-23",
        "status": ledger.CLAIMED,
        "run_id": RUN,
        "attempts": 1,
        "created_at": NOW,
        "claimed_at": NOW,
        "updated_at": NOW,
        "lease_expires_at": NOW + ledger.CLAIM_LEASE,
        "send_token": NEW_TOKEN,
    }


def test_a_claim_stores_the_address_lower_cased_so_history_finds_it_in_any_case(
    ledger_table: Settings,
) -> None:
    # Given a CRM address in mixed case
    claim = dataclasses.replace(claim_of(), recipient_email="Sam.Author@Lender.Example.com.au")

    # When a run claims the notice
    assert ledger.claim(claim, RUN, NOW)

    # Then the recipient index holds the address lower-cased
    assert stored()["recipient_email"] == SAM
    found = [e.id for e in Notification.by_recipient.query(ledger.address_key("SAM." + SAM[4:]))]
    assert found == [KEY]


def test_a_claim_without_a_token_writes_none(ledger_table: Settings) -> None:
    assert ledger.claim(claim_of(token=None), RUN, NOW)

    assert "send_token" not in stored()


def test_a_claim_of_a_released_notice_takes_the_new_token_and_keeps_its_history(
    ledger_table: Settings,
) -> None:
    # Given a notice released after a transient failure
    put(ledger.PENDING, last_error="throttled")

    # When the next run claims it
    assert ledger.claim(claim_of(), OTHER_RUN, NOW)

    # Then the claim is the new run's, and the last error stays for the record
    after = stored()
    assert (after["run_id"], after["send_token"], after["attempts"]) == (OTHER_RUN, NEW_TOKEN, 2)
    assert after["last_error"] == "throttled"


def test_a_retried_claim_whose_first_answer_was_lost_is_recognised_as_ours(
    ledger_table: Settings,
) -> None:
    # Given the answer to the claim is lost, so botocore sends it again
    with lost_responses(ledger_client(), "UpdateItem", first_call()) as lost:
        # When the run claims the notice
        claimed = ledger.claim(claim_of(), RUN, NOW)

    # Then the retry failed against our own claim, which counts as claimed, applied once
    assert len(lost) == 1
    assert claimed is True
    after = stored()
    assert (after["status"], after["run_id"], after["attempts"]) == (ledger.CLAIMED, RUN, 1)


@pytest.mark.parametrize(
    ("holder", "token"),
    [
        pytest.param(OTHER_RUN, NEW_TOKEN, id="another-run-same-token"),
        pytest.param(RUN, TOKEN, id="this-run-another-token"),
    ],
)
def test_a_live_claim_that_is_not_exactly_ours_is_never_taken_for_ours(
    ledger_table: Settings, holder: str, token: str
) -> None:
    # Given a live claim by ``holder`` with ``token``
    put(ledger.CLAIMED, run_id=holder, token=token)
    before = raw()

    # When this run (RUN, NEW_TOKEN) claims the notice
    claimed = ledger.claim(claim_of(), RUN, NOW)

    # Then it is refused and the claim left to its owner
    assert claimed is False
    assert raw() == before


# --- finishing writes: mark_sent, mark_failed, mark_unknown, release ----------------------


def test_mark_sent_records_the_delivery_on_this_runs_claim(ledger_table: Settings) -> None:
    put(ledger.CLAIMED)

    ledger.mark_sent(KEY, RUN, "Note Reminder: Call the valuer", "ses-1", NOW)

    after = stored()
    assert after["status"] == ledger.SENT
    assert after["subject"] == "Note Reminder: Call the valuer"
    assert after["message_id"] == "ses-1"
    assert after["sent_at"] == NOW
    assert after["updated_at"] == NOW


def test_mark_sent_wins_over_an_abandoned_verdict_and_leaves_the_failed_list(
    ledger_table: Settings,
) -> None:
    # Given another run recorded this run's claim as failed (interrupted)
    entry = put(ledger.CLAIMED, claimed=minutes_ago(20))
    assert ledger.abandon(entry, minutes_ago(1))
    assert [e.id for e in ledger.failed_entries()] == [KEY]

    # When this run records that SES accepted the message after all
    ledger.mark_sent(KEY, RUN, "subject", "ses-1", NOW)

    # Then it is sent, without failure markers
    after = stored()
    assert after["status"] == ledger.SENT
    assert not {"failure_reason", "failed_status", "failed_at"} & after.keys()
    assert list(ledger.failed_entries()) == []


def test_mark_sent_again_after_a_lost_answer_keeps_it_sent(ledger_table: Settings) -> None:
    put(ledger.CLAIMED)
    ledger.mark_sent(KEY, RUN, "subject", "ses-1", NOW)

    ledger.mark_sent(KEY, RUN, "subject", "ses-1", NOW)

    assert (stored()["status"], stored()["message_id"]) == (ledger.SENT, "ses-1")


def test_mark_sent_is_refused_when_another_run_holds_the_notice(ledger_table: Settings) -> None:
    put(ledger.CLAIMED, run_id=OTHER_RUN)
    before = raw()

    with pytest.raises(UpdateError) as refused:
        ledger.mark_sent(KEY, RUN, "subject", "ses-1", NOW)

    assert refused.value.cause_response_code == "ConditionalCheckFailedException"
    assert raw() == before


Finish = Callable[[str, str, datetime], None]


def release(key: str, run_id: str, now: datetime) -> None:
    ledger.release(key, run_id, "throttled", now)


def mark_failed(key: str, run_id: str, now: datetime) -> None:
    ledger.mark_failed(key, run_id, "subject", "MessageRejected: bad address", now)


def mark_unknown(key: str, run_id: str, now: datetime) -> None:
    ledger.mark_unknown(key, run_id, "subject", "read timeout", now)


FINISHES = [
    pytest.param(release, ledger.PENDING, id="release"),
    pytest.param(mark_failed, ledger.FAILED, id="mark_failed"),
    pytest.param(mark_unknown, ledger.UNKNOWN, id="mark_unknown"),
]


def test_release_gives_the_claim_back_with_the_error(ledger_table: Settings) -> None:
    put(ledger.CLAIMED)

    ledger.release(KEY, RUN, "throttled", NOW)

    after = stored()
    assert (after["status"], after["last_error"], after["updated_at"]) == (
        ledger.PENDING,
        "throttled",
        NOW,
    )
    assert not {"failure_reason", "failed_status", "failed_at", "subject"} & after.keys()
    assert ledger.state(read_back(), NOW) == ledger.PENDING


def test_mark_failed_records_the_reason_and_lists_the_entry_as_failed(
    ledger_table: Settings,
) -> None:
    put(ledger.CLAIMED)

    ledger.mark_failed(KEY, RUN, "Note Reminder", "MessageRejected: bad address", NOW)

    after = stored()
    assert after["status"] == ledger.FAILED
    assert after["failure_reason"] == "MessageRejected: bad address"
    assert after["last_error"] == "MessageRejected: bad address"
    assert after["subject"] == "Note Reminder"
    assert (after["failed_status"], after["failed_at"], after["updated_at"]) == (
        ledger.FAILED,
        NOW,
        NOW,
    )
    assert [e.id for e in ledger.failed_entries()] == [KEY]


def test_mark_unknown_records_the_error_without_listing_it_as_failed(
    ledger_table: Settings,
) -> None:
    put(ledger.CLAIMED)

    ledger.mark_unknown(KEY, RUN, "Note Reminder", "read timeout", NOW)

    after = stored()
    assert (after["status"], after["last_error"], after["subject"], after["updated_at"]) == (
        ledger.UNKNOWN,
        "read timeout",
        "Note Reminder",
        NOW,
    )
    assert not {"failure_reason", "failed_status", "failed_at"} & after.keys()
    assert list(ledger.failed_entries()) == []


def test_a_finishing_write_keeps_at_most_1000_characters_of_an_error(
    ledger_table: Settings,
) -> None:
    put(ledger.CLAIMED)

    ledger.mark_failed(KEY, RUN, "subject", "x" * 5000, NOW)

    after = stored()
    assert (len(after["last_error"]), len(after["failure_reason"])) == (1000, 1000)


@pytest.mark.parametrize(("finish", "status"), FINISHES)
def test_a_finishing_write_repeated_after_a_lost_answer_is_not_an_error(
    ledger_table: Settings, finish: Finish, status: str
) -> None:
    # Given this run already moved its claim to ``status``
    put(ledger.CLAIMED)
    finish(KEY, RUN, NOW)
    before = raw()

    # When botocore's retry of the same write arrives
    finish(KEY, RUN, NOW)

    # Then it succeeds and changes nothing
    assert raw() == before
    assert stored()["status"] == status


@pytest.mark.parametrize(("finish", "status"), FINISHES)
def test_a_finishing_write_whose_first_answer_was_lost_succeeds(
    ledger_table: Settings, finish: Finish, status: str
) -> None:
    put(ledger.CLAIMED)

    with lost_responses(ledger_client(), "UpdateItem", first_call()) as lost:
        finish(KEY, RUN, NOW)

    assert len(lost) == 1
    assert (stored()["status"], stored()["run_id"]) == (status, RUN)


CONFLICTS = [
    pytest.param(lambda: None, "no entry", id="no-entry"),
    pytest.param(
        lambda: put(ledger.CLAIMED, run_id=OTHER_RUN),
        "status 'claimed' of run 'run-2'",
        id="another-runs-claim",
    ),
    pytest.param(
        lambda: put(ledger.PENDING, run_id=OTHER_RUN),
        "status 'pending' of run 'run-2'",
        id="released-by-another-run",
    ),
    pytest.param(lambda: put(ledger.SENT), "status 'sent' of run 'run-1'", id="sent"),
]


@pytest.mark.parametrize(("finish", "status"), FINISHES)
@pytest.mark.parametrize(("given", "found"), CONFLICTS)
def test_a_finishing_write_refuses_an_entry_that_is_not_this_runs_claim(
    ledger_table: Settings, finish: Finish, status: str, given: Given, found: str
) -> None:
    # Given the entry is not (or no longer) this run's claim
    given()
    before = raw()

    # When this run records an outcome on it
    with pytest.raises(ledger.LedgerConflict) as conflict:
        finish(KEY, RUN, NOW)

    # Then it is refused, saying what it found, and the entry is unchanged
    assert str(conflict.value) == f"{KEY}: expected this run's claim, found {found}"
    assert raw() == before


@pytest.mark.parametrize(
    ("finish", "other"),
    [
        pytest.param(release, mark_failed, id="release-after-failed"),
        pytest.param(mark_failed, mark_unknown, id="failed-after-unknown"),
        pytest.param(mark_unknown, release, id="unknown-after-release"),
    ],
)
def test_a_finishing_write_refuses_this_runs_entry_in_another_final_state(
    ledger_table: Settings, finish: Finish, other: Finish
) -> None:
    put(ledger.CLAIMED)
    other(KEY, RUN, NOW)
    before = raw()

    with pytest.raises(ledger.LedgerConflict):
        finish(KEY, RUN, NOW)

    assert raw() == before


# --- abandon and requeue -----------------------------------------------------------------


def test_an_expired_claim_is_abandoned_as_failed_for_an_operator(ledger_table: Settings) -> None:
    # Given a claim whose lease ran out (its run died)
    entry = put(ledger.CLAIMED, claimed=minutes_ago(20))

    # When a later run abandons it
    abandoned = ledger.abandon(entry, NOW)

    # Then it is failed as interrupted, when it happened, and listed for an operator
    assert abandoned is True
    after = stored()
    assert after["status"] == ledger.FAILED
    assert after["failure_reason"] == ledger.INTERRUPTED
    assert after["last_error"] == f"{ledger.INTERRUPTED} (run {RUN})"
    assert (after["failed_status"], after["failed_at"], after["updated_at"]) == (
        ledger.FAILED,
        NOW,
        NOW,
    )
    assert [e.id for e in ledger.failed_entries()] == [KEY]


@pytest.mark.parametrize(
    "renew",
    [
        pytest.param(lambda: ledger.claim(claim_of(), OTHER_RUN, NOW, SETTLE), id="reclaimed"),
        pytest.param(lambda: ledger.mark_sent(KEY, RUN, "s", "ses-1", NOW), id="run-finished"),
    ],
)
def test_an_abandon_is_refused_when_the_claim_changed_since_it_was_read(
    ledger_table: Settings, renew: Callable[[], object]
) -> None:
    # Given a run read an expired claim, and it was renewed or finished meanwhile
    entry = put(ledger.CLAIMED, claimed=minutes_ago(20))
    renew()
    before = raw()

    # When the run abandons what it read
    abandoned = ledger.abandon(entry, NOW)

    # Then nothing is written
    assert abandoned is False
    assert raw() == before


def test_a_requeued_failure_is_pending_again_and_leaves_the_failed_list(
    ledger_table: Settings,
) -> None:
    put(ledger.CLAIMED)
    ledger.mark_failed(KEY, RUN, "subject", "MessageRejected", minutes_ago(1))
    [entry] = ledger.failed_entries()

    assert ledger.requeue(entry, NOW) is True

    after = stored()
    assert (after["status"], after["updated_at"], after["attempts"]) == (ledger.PENDING, NOW, 1)
    assert after["last_error"] == "MessageRejected"
    assert not {"failure_reason", "failed_status", "failed_at"} & after.keys()
    assert list(ledger.failed_entries()) == []


def test_a_requeue_is_refused_when_the_entry_is_no_longer_failed(ledger_table: Settings) -> None:
    entry = put(ledger.FAILED)
    put(ledger.PENDING)
    before = raw()

    assert ledger.requeue(entry, NOW) is False
    assert raw() == before


# --- SES's events ------------------------------------------------------------------------

SES_SENT_AT = utc("2026-11-22 21:55")


def apply_event(settings: Settings, event_type: str, token: str = TOKEN) -> ses_events.Outcome:
    """Apply an SES event about the message tagged ``token``, as the handler does."""
    event = SesEvent(
        type=event_type,
        message_id="ses-message-1",
        token=token,
        configuration_set=settings.ses_configuration_set,
        sent_at=SES_SENT_AT,
        at=SES_SENT_AT,
        reject_reason="Virus detected" if event_type == ses_events.REJECT else None,
    )
    return ses_events.record_event(
        event, settings=settings, now=NOW, client=ses_client(), emit_metrics=False
    )


SETTLED_BY_SEND = [
    pytest.param(lambda: put(ledger.UNKNOWN), id="unknown"),
    pytest.param(lambda: put(ledger.CLAIMED), id="claimed-live"),
    pytest.param(lambda: put(ledger.CLAIMED, claimed=minutes_ago(60)), id="claimed-expired"),
    pytest.param(lambda: put(ledger.PENDING, last_error="throttled"), id="pending"),
    pytest.param(
        lambda: put(
            ledger.FAILED,
            failure_reason=ledger.INTERRUPTED,
            failed_status=ledger.FAILED,
            failed_at=minutes_ago(1),
        ),
        id="failed-interrupted",
    ),
]


@pytest.mark.parametrize("given", SETTLED_BY_SEND)
def test_a_send_event_settles_an_entry_ses_may_have_taken_as_sent(
    ledger_table: Settings, given: Given
) -> None:
    # Given an entry whose message SES may or may not have accepted
    given()

    # When SES reports the message as sent
    outcome = apply_event(ledger_table, ses_events.SEND)

    # Then it is sent with SES's id and time, out of the failed list
    assert outcome.settled == [KEY]
    after = stored()
    assert after["status"] == ledger.SENT
    assert (after["message_id"], after["sent_at"], after["updated_at"]) == (
        "ses-message-1",
        SES_SENT_AT,
        NOW,
    )
    assert after["ses_events"] == {ses_events.SEND}
    assert not {"failure_reason", "failed_status", "failed_at"} & after.keys()
    assert ledger.state(read_back(), NOW, SETTLE) == ledger.SENT


@pytest.mark.parametrize(
    ("given", "status"),
    [
        pytest.param(lambda: put(ledger.SENT, message_id="run-recorded"), ledger.SENT, id="sent"),
        pytest.param(
            lambda: put(ledger.FAILED, failure_reason="MessageRejected", failed_status="failed"),
            ledger.FAILED,
            id="failed-rejected",
        ),
    ],
)
def test_a_send_event_only_adds_itself_to_a_sent_or_rejected_entry(
    ledger_table: Settings, given: Given, status: str
) -> None:
    given()
    before = stored()

    outcome = apply_event(ledger_table, ses_events.SEND)

    assert (outcome.settled, outcome.recorded) == ([], [KEY])
    after = stored()
    assert after.pop("ses_events") == {ses_events.SEND}
    assert after == before
    assert after["status"] == status


def test_a_send_event_of_an_older_attempt_changes_nothing(ledger_table: Settings) -> None:
    put(ledger.UNKNOWN, token=NEW_TOKEN)
    before = raw()

    outcome = apply_event(ledger_table, ses_events.SEND, token=TOKEN)

    assert outcome.entries == []
    assert raw() == before


@pytest.mark.parametrize(
    "given",
    [
        pytest.param(lambda: put(ledger.SENT, message_id="ses-message-1"), id="sent"),
        pytest.param(lambda: put(ledger.UNKNOWN), id="unknown"),
        pytest.param(lambda: put(ledger.CLAIMED), id="claimed"),
    ],
)
def test_a_reject_event_fails_the_entry_whatever_the_run_recorded(
    ledger_table: Settings, given: Given
) -> None:
    given()

    outcome = apply_event(ledger_table, ses_events.REJECT)

    assert outcome.rejected == [KEY]
    after = stored()
    assert after["status"] == ledger.FAILED
    assert after["failure_reason"] == "rejected by SES: Virus detected"
    assert (after["failed_status"], after["failed_at"], after["rejected_at"]) == (
        ledger.FAILED,
        NOW,
        SES_SENT_AT,
    )
    assert after["ses_events"] == {ses_events.REJECT}
    assert [e.id for e in ledger.failed_entries()] == [KEY]


def test_a_send_event_after_a_reject_does_not_undo_the_failure(ledger_table: Settings) -> None:
    put(ledger.UNKNOWN)
    apply_event(ledger_table, ses_events.REJECT)

    apply_event(ledger_table, ses_events.SEND)

    after = stored()
    assert after["status"] == ledger.FAILED
    assert after["ses_events"] == {ses_events.REJECT, ses_events.SEND}


# --- suppression entries -----------------------------------------------------------------


def test_the_first_suppression_of_an_address_wins(ledger_table: Settings) -> None:
    # Given Sam's address bounced permanently
    assert suppression.record(SAM, suppression.BOUNCE, at=minutes_ago(5), now=minutes_ago(5))

    # When a complaint about it (any case) arrives later
    again = suppression.record(SAM.upper(), suppression.COMPLAINT, at=NOW, now=NOW)

    # Then the first record stands
    assert again is False
    entry = Notification.get(suppression.key(SAM), consistent_read=True)
    assert (entry.status, entry.suppression_reason, entry.suppressed_at) == (
        suppression.STATUS,
        suppression.BOUNCE,
        minutes_ago(5),
    )
    assert suppression.suppressed([SAM.upper()]) == {SAM.upper(): suppression.BOUNCE}


def test_a_retried_mark_sent_after_ses_rejected_the_message_leaves_it_failed(
    ledger_table: Settings,
) -> None:
    # Given the run recorded its message as sent, but the answer was lost, and SES's
    # Reject event (a virus) failed the entry before botocore's retry of the write arrived
    put(ledger.CLAIMED)
    ledger.mark_sent(KEY, RUN, "subject", "ses-message-1", NOW)
    apply_event(ledger_table, ses_events.REJECT)

    # When the retry arrives
    with pytest.raises(UpdateError) as refused:
        ledger.mark_sent(KEY, RUN, "subject", "ses-message-1", NOW)

    # Then it is refused: the notice stays failed (SES will not deliver it) and listed
    assert refused.value.cause_response_code == "ConditionalCheckFailedException"
    after = stored()
    assert after["status"] == ledger.FAILED
    assert after["failure_reason"] == "rejected by SES: Virus detected"
    assert [e.id for e in ledger.failed_entries()] == [KEY]


def test_failed_entries_are_listed_oldest_first_and_filtered_by_kind_and_item(
    ledger_table: Settings,
) -> None:
    # Given three failed entries: two note reminders (note-1, note-2) and a repayment notice
    def failed(key: str, kind: str, item_id: str, at: datetime) -> None:
        Notification(
            id=key,
            kind=kind,
            item_id=item_id,
            recipient_id="staff-2",
            recipient_email=SAM,
            business_date="2026-11-23",
            status=ledger.FAILED,
            run_id=RUN,
            attempts=1,
            created_at=CREATED,
            updated_at=at,
            claimed_at=at,
            lease_expires_at=at + ledger.CLAIM_LEASE,
            failed_status=ledger.FAILED,
            failed_at=at,
        ).save()

    note_2 = NOTE_REMINDER.key("note-2", "2026-11-23", "staff-2")
    repayment = registry.kind("repayment_upcoming").key("rep-1", "2026-11-30", "bor-1")
    failed(note_2, NOTE_REMINDER.name, "note-2", minutes_ago(30))
    failed(KEY, NOTE_REMINDER.name, "note-1", minutes_ago(60))
    failed(repayment, "repayment_upcoming", "rep-1", minutes_ago(10))

    # When they are listed, by kind, by item, and by both
    def listed(**filters: Any) -> list[str]:
        return [entry.id for entry in ledger.failed_entries(**filters)]

    # Then each filter keeps exactly its entries, oldest failure first
    assert listed() == [KEY, note_2, repayment]
    assert listed(kinds=[NOTE_REMINDER.name]) == [KEY, note_2]
    assert listed(kinds=iter(["repayment_upcoming", "stale_applications"])) == [repayment]
    assert listed(item_id="note-2") == [note_2]
    assert listed(kinds=[NOTE_REMINDER.name], item_id="rep-1") == []
    assert listed(kinds=[NOTE_REMINDER.name], item_id="note-1") == [KEY]


def test_a_notice_key_escapes_percent_and_hash_so_no_two_parts_lists_share_a_key() -> None:
    # Given parts holding '#', '%' and a literal '%23' (what an escaped '#' looks like)
    # When their keys are built
    hashed = ledger.notice_key("note_reminders", "n#1", "x")
    literal = ledger.notice_key("note_reminders", "n%231", "x")
    plain = ledger.notice_key("note_reminders", "note-1", "staff-2")

    # Then each character is escaped, the two keys differ, and plain parts keep their keys
    assert hashed == "note_reminders#n%231#x"
    assert literal == "note_reminders#n%25231#x"
    assert plain == "note_reminders#note-1#staff-2"
