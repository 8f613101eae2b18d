"""Every delivery outcome is counted in the run summary and logged for the operator.

The summary's counts feed the run's metrics and alarms, and the log line of each
outcome (abandoned, held, deferred, unknown, not sent, not recorded) is what an
operator reads to act on it: both are part of the contract, so both are asserted
exactly, with a notice before the one under test so a count that is overwritten
rather than added to shows. Each notice is counted on a summary of its own (a
worker's) and folded into the run's, so within one notice only a digest, whose
other part was counted first, shows a count that is overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger, registry, suppression
from chalicelib.config import Settings
from chalicelib.delivery import DeliveryIncomplete
from chalicelib.models import Notification
from chalicelib.observability import mask_addresses
from tests import factories as f
from tests.aws_recorder import AwsCall, another_actor
from tests.factories import BEN, BROOKE, MIA
from tests.support import ledger_key, run, sent_emails, ses_error, ses_faults, sydney, utc

pytestmark = [pytest.mark.task, pytest.mark.error_handling]

Logs = Callable[[], list[dict[str, Any]]]

MONDAY = sydney("2026-11-23 09:00")
NOW = MONDAY.astimezone(UTC)
REP1_BEN = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1")
REP1_MIA = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")
REP1_AVA = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-3")
AVA = "ava.nguyen@example.net"


def three_borrowers() -> None:
    """rep-1, due 30/11/2026, to Ben, Mia and Ava (in that order)."""
    f.crm(borrowers=3)
    f.application(borrower_ids=["bor-1", "bor-2", "bor-3"])
    f.repayment()


def logged(logs: Logs, message: str) -> list[dict[str, Any]]:
    """The log records with ``message``."""
    return [record for record in logs() if record.get("message") == message]


def claim_of(key: str, recipient_id: str, email: str, run_id: str, lease: datetime) -> None:
    """A claim another run holds on a repayment notice, with its lease ending at ``lease``."""
    f.claimed_entry(
        key, recipient_id=recipient_id, email=email, run_id=run_id, lease_expires_at=lease
    )


def entry(key: str) -> Notification:
    return Notification.get(key, consistent_read=True)


def ledger_client() -> Any:
    return Notification._get_connection().connection.client


@contextmanager
def dynamodb_error(
    operation: str, code: str, pick: Callable[[dict[str, Any]], bool]
) -> Iterator[None]:
    """DynamoDB answers the ``operation`` calls whose JSON body ``pick`` selects with ``code``."""

    def before_call(params: dict[str, Any], **_: Any) -> Any:
        if pick(json.loads(params["body"])):
            return ses_error(code, 400)
        return None

    client = ledger_client()
    client.meta.events.register(f"before-call.dynamodb.{operation}", before_call)
    try:
        yield
    finally:
        client.meta.events.unregister(f"before-call.dynamodb.{operation}", before_call)


def for_key(key: str, status: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """Picks the ledger writes of ``key`` (that set ``status``, when given)."""

    def pick(body: dict[str, Any]) -> bool:
        if body.get("Key", {}).get("id") != {"S": key}:
            return False
        return status is None or {"S": status} in body.get("ExpressionAttributeValues", {}).values()

    return pick


# --- a claim abandoned by a dead run -------------------------------------------------------


def test_an_abandoned_claim_is_counted_failed_logged_and_stamped_with_the_run_time(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch, stdout_json: Logs
) -> None:
    # Given no SES events, another run live on Ben's notice, a dead run's claims on Mia's
    # and Ava's (their leases ran out)
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    three_borrowers()
    claim_of(REP1_BEN, "bor-1", BEN, "live-run", NOW + timedelta(minutes=5))
    claim_of(REP1_MIA, "bor-2", MIA, "crashed-run", NOW - timedelta(minutes=45))
    claim_of(REP1_AVA, "bor-3", AVA, "crashed-run", NOW - timedelta(minutes=45))

    # When the run goes through
    summary = run("repayment_reminders", MONDAY, ses)

    # Then Ben's is skipped, Mia's and Ava's are failed for an operator, nothing is sent
    assert (summary.notices_due, summary.skipped, summary.failed, summary.sent) == (3, 1, 2, 0)
    assert sent_emails() == []
    for key in (REP1_MIA, REP1_AVA):
        abandoned = entry(key)
        assert abandoned.status == ledger.FAILED
        assert abandoned.updated_at == abandoned.failed_at == NOW
        assert abandoned.last_error == f"{ledger.INTERRUPTED} (run crashed-run)"
    # And each is logged as an error naming the check, the key and the dead run
    records = logged(stdout_json, "notice abandoned by an interrupted run")
    assert [(r["level"], r["check"], r["key"], r["run"]) for r in records] == [
        ("ERROR", "repayment_reminders", REP1_MIA, "crashed-run"),
        ("ERROR", "repayment_reminders", REP1_AVA, "crashed-run"),
    ]


def test_a_digest_with_an_abandoned_part_and_a_rejected_part_counts_both_failed(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no SES events, Brooke's escalation digest of rep-1 and rep-2 (both ten days
    # overdue), a dead run's claim on rep-1's part, and SES rejecting mail to Brooke
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    f.crm()
    f.application()
    f.repayment("rep-1", due_date="2026-11-13")
    f.repayment("rep-2", due_date="2026-11-13")
    rep_1 = ledger_key("repayment_overdue_10_day", "rep-1", "2026-11-13", "bdm-1")
    claim_of(rep_1, "bdm-1", BROOKE, "crashed-run", NOW - timedelta(minutes=45))

    # When the run goes through
    rejected = ses_faults(ses, lambda to: ses_error("MessageRejected") if to == BROOKE else None)
    with rejected:
        summary = run("repayment_reminders", MONDAY, ses)

    # Then rep-1's part is failed as abandoned and rep-2's as rejected: two failed
    assert (summary.failed, summary.sent) == (2, 0)
    rep_2 = ledger_key("repayment_overdue_10_day", "rep-2", "2026-11-13", "bdm-1")
    assert [entry(key).status for key in (rep_1, rep_2)] == [ledger.FAILED, ledger.FAILED]


def test_an_abandon_lost_to_the_dead_run_finishing_counts_as_skipped(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch, stdout_json: Logs
) -> None:
    # Given no SES events, another run live on Ben's notice, and a run presumed dead on
    # Mia's that records her notice as sent just before this run abandons it
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    three_borrowers()
    claim_of(REP1_BEN, "bor-1", BEN, "live-run", NOW + timedelta(minutes=5))
    claim_of(REP1_MIA, "bor-2", MIA, "slow-run", NOW - timedelta(minutes=45))
    finished: list[str] = []

    def slow_run_finishes(params: dict[str, Any], **_: Any) -> None:
        if not finished and for_key(REP1_MIA, ledger.FAILED)(json.loads(params["body"])):
            finished.append(REP1_MIA)
            with another_actor():
                ledger.mark_sent(REP1_MIA, "slow-run", "Upcoming", "msg-1", NOW)

    client = ledger_client()
    client.meta.events.register("before-call.dynamodb.UpdateItem", slow_run_finishes)
    try:
        # When this run goes through
        summary = run("repayment_reminders", MONDAY, ses)
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", slow_run_finishes)

    # Then Mia's notice stays sent, counted as skipped (not failed); Ava is mailed
    assert finished == [REP1_MIA]
    assert entry(REP1_MIA).status == ledger.SENT
    assert (summary.skipped, summary.failed, summary.sent) == (2, 0, 1)
    assert [m.recipients for m in sent_emails()] == [[AVA]]
    assert logged(stdout_json, "notice abandoned by an interrupted run") == []


# --- held, deferred ------------------------------------------------------------------------


def test_notices_to_suppressed_addresses_are_counted_held_and_logged(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given Mia's and Ava's addresses bounced; Ben's did not
    three_borrowers()
    at = utc("2026-11-20 01:00")
    suppression.record(MIA, suppression.BOUNCE, at=at, now=at)
    suppression.record(AVA, suppression.COMPLAINT, at=at, now=at)

    # When the run goes through
    summary = run("repayment_reminders", MONDAY, ses)

    # Then three notices were due, two held and one sent
    assert (summary.notices_due, summary.suppressed, summary.sent) == (3, 2, 1)
    # And each held notice is logged with its recipient, the reason and its keys
    records = logged(stdout_json, "notice held: the address is suppressed")
    assert [(r["check"], r["recipient_id"], r["reason"], r["keys"]) for r in records] == [
        ("repayment_reminders", "bor-2", "BOUNCE", [REP1_MIA]),
        ("repayment_reminders", "bor-3", "COMPLAINT", [REP1_AVA]),
    ]


def test_notices_deferred_for_lack_of_time_are_counted_as_due_and_deferred(
    service: Settings, ses: SESV2Client
) -> None:
    # Given three notices due, and time for only the first
    three_borrowers()
    left = iter([40_000, 10_000, 10_000, 10_000])

    # When the run goes through with a 30 s margin
    summary = run("repayment_reminders", MONDAY, ses, remaining_ms=lambda: next(left))

    # Then all three were due, one sent and two deferred
    assert (summary.notices_due, summary.sent, summary.deferred) == (3, 1, 2)


# --- SES outcomes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "counts"),
    [
        pytest.param(True, (0, 2), id="settled-by-events"),
        pytest.param(False, (2, 0), id="no-events"),
    ],
)
def test_ambiguous_sends_are_each_counted_and_logged_with_the_reason(
    service: Settings,
    ses: SESV2Client,
    monkeypatch: pytest.MonkeyPatch,
    stdout_json: Logs,
    events: bool,
    counts: tuple[int, int],
) -> None:
    # Given Mia's and Ava's sends get a 500 (SES may have taken them)
    if not events:
        monkeypatch.delenv("SES_CONFIGURATION_SET")
    three_borrowers()

    # When the run goes through
    with ses_faults(ses, lambda to: ses_error("InternalFailure", 500) if to != BEN else None):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then both are counted (failed without events, unknown with them), Ben's is sent
    assert (summary.failed, summary.unknown, summary.sent) == (*counts, 1)
    # And each is logged as a warning with its key and why
    records = logged(stdout_json, "notice outcome unknown")
    reason = "outcome unknown, SES may have accepted it: InternalFailure: injected"
    # (in the order the concurrent sends finished)
    assert sorted((r["level"], r["check"], r["keys"], r["reason"]) for r in records) == [
        ("WARNING", "repayment_reminders", [REP1_MIA], reason),
        ("WARNING", "repayment_reminders", [REP1_AVA], reason),
    ]


def test_a_transient_send_failure_is_logged_with_its_reason_and_attempts_and_no_traceback(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given SES throttles Mia's send
    three_borrowers()

    # When the run goes through
    with (
        ses_faults(
            ses, lambda to: ses_error("TooManyRequestsException", 429) if to == MIA else None
        ),
        pytest.raises(DeliveryIncomplete),
    ):
        run("repayment_reminders", MONDAY, ses)

    # Then the log names the key, the reason and the attempt, without a traceback
    [record] = logged(stdout_json, "notice not sent")
    assert (record["level"], record["check"], record["keys"], record["attempts"]) == (
        "WARNING",
        "repayment_reminders",
        [REP1_MIA],
        1,
    )
    assert record["reason"] == "TooManyRequestsException: injected"
    assert "exception" not in record


def test_an_unexpected_send_error_is_logged_with_its_repr_and_traceback(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given Mia's send breaks in a way that is not an SES answer (a bug, say)
    three_borrowers()

    # When the run goes through
    broken = ses_faults(ses, lambda to: ZeroDivisionError("boom") if to == MIA else None)
    with broken, pytest.raises(DeliveryIncomplete) as raised:
        run("repayment_reminders", MONDAY, ses)

    # Then it is released for a retry, logged with its repr and the traceback
    [record] = logged(stdout_json, "notice not sent")
    assert (record["keys"], record["reason"]) == ([REP1_MIA], "ZeroDivisionError('boom')")
    assert "ZeroDivisionError: boom" in record["exception"]
    assert raised.value.summary.errors == ["ZeroDivisionError('boom')"]
    assert entry(REP1_MIA).status == ledger.PENDING


def test_the_run_error_names_the_first_five_transient_errors(
    service: Settings, ses: SESV2Client
) -> None:
    # Given six borrowers whose sends are all throttled, each with its own message
    f.crm(borrowers=3)
    for n in range(4, 7):
        f.borrower(f"bor-{n}", f"Borrower {n}", f"borrower{n}@example.net")
    f.application(borrower_ids=[f"bor-{n}" for n in range(1, 7)])
    f.repayment()

    def throttle(to: str) -> Any:
        return ses_error("TooManyRequestsException", 429, f"slow down {to}")

    # When the run goes through
    with ses_faults(ses, throttle), pytest.raises(DeliveryIncomplete) as raised:
        run("repayment_reminders", MONDAY, ses)

    # Then the error counts six and names the first five, separated by "; "
    summary = raised.value.summary
    assert summary.retrying == 6
    first_five = "; ".join(summary.errors[:5])
    assert str(raised.value) == mask_addresses(
        "repayment_reminders: 6 notice(s) not sent after transient errors; they will be "
        f"retried ({first_five})"
    )
    assert str(raised.value).count("TooManyRequestsException") == 5


# --- ledger errors -------------------------------------------------------------------------


def test_a_claim_refused_by_dynamodb_is_left_due_and_reported_by_its_error_code(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given DynamoDB refuses the claim of Mia's notice
    three_borrowers()

    # When the run goes through
    refused = dynamodb_error("UpdateItem", "AccessDeniedException", for_key(REP1_MIA))
    with refused, pytest.raises(DeliveryIncomplete) as raised:
        run("repayment_reminders", MONDAY, ses)

    # Then Ben and Ava are mailed, Mia's is left due and reported by the error code
    summary = raised.value.summary
    assert (summary.sent, summary.retrying) == (2, 1)
    assert summary.errors == ["claim failed: AccessDeniedException"]
    [record] = logged(stdout_json, "claim failed, left due")
    assert (record["check"], record["key"], record["error"]) == (
        "repayment_reminders",
        REP1_MIA,
        "AccessDeniedException",
    )


def test_an_outcome_dynamodb_refuses_to_record_is_reported_and_left_claimed(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given DynamoDB refuses to record Mia's notice as sent
    three_borrowers()

    # When the run goes through
    with dynamodb_error("UpdateItem", "AccessDeniedException", for_key(REP1_MIA, ledger.SENT)):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then all three went out; Mia's stays claimed for SES's events, reported with the
    # error PynamoDB raised (its type, then its message, which names DynamoDB's code)
    assert summary.sent == 3
    [error] = summary.errors
    assert error.startswith("recording sent failed: UpdateError: Failed to update item: ")
    assert "(AccessDeniedException)" in error
    assert entry(REP1_MIA).status == ledger.CLAIMED
    [record] = logged(stdout_json, "outcome not recorded")
    assert (record["level"], record["check"], record["key"], record["status"]) == (
        "ERROR",
        "repayment_reminders",
        REP1_MIA,
        ledger.SENT,
    )
    assert record["error"] == error.removeprefix("recording sent failed: ")


def test_a_ledger_error_without_a_dynamodb_answer_is_reported_by_its_type_and_message(
    service: Settings, ses: SESV2Client
) -> None:
    # Given every attempt to claim Mia's notice times out
    three_borrowers()

    def time_out(params: dict[str, Any], **_: Any) -> None:
        if for_key(REP1_MIA)(json.loads(params["body"])):
            raise ReadTimeoutError(endpoint_url="https://dynamodb.example")

    client = ledger_client()
    client.meta.events.register("before-call.dynamodb.UpdateItem", time_out)
    try:
        # When the run goes through
        with pytest.raises(DeliveryIncomplete) as raised:
            run("repayment_reminders", MONDAY, ses)
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", time_out)

    # Then the error is reported by the exception's type and message
    [error] = raised.value.summary.errors
    assert error.startswith("claim failed: ")
    assert "ReadTimeoutError" in error or "UpdateError" in error
    assert "https://dynamodb.example" in error or "Read timeout" in error


def test_a_ledger_error_without_a_code_is_reported_by_its_type(
    service: Settings, ses: SESV2Client
) -> None:
    # Given DynamoDB answers the claim of Mia's notice with an error that names no code
    three_borrowers()

    def codeless(params: dict[str, Any], **_: Any) -> Any:
        if for_key(REP1_MIA)(json.loads(params["body"])):
            response, parsed = ses_error("Ignored", 400)
            return response, {"ResponseMetadata": parsed["ResponseMetadata"]}
        return None

    client = ledger_client()
    client.meta.events.register("before-call.dynamodb.UpdateItem", codeless)
    try:
        # When the run goes through
        with pytest.raises(DeliveryIncomplete) as raised:
            run("repayment_reminders", MONDAY, ses)
    finally:
        client.meta.events.unregister("before-call.dynamodb.UpdateItem", codeless)

    # Then the error is reported by the type PynamoDB raised
    assert raised.value.summary.errors == ["claim failed: VerboseClientError"]


def test_every_notice_given_up_in_a_run_is_counted_failed(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one attempt is the limit, and SES throttles Mia's and Ava's sends
    monkeypatch.setenv("MAX_TRANSIENT_ATTEMPTS", "1")
    three_borrowers()

    # When the run goes through
    throttled = ses_faults(
        ses, lambda to: ses_error("TooManyRequestsException", 429) if to != BEN else None
    )
    with throttled:
        summary = run("repayment_reminders", MONDAY, ses)

    # Then both are given up as failed, and nothing is left retrying
    assert (summary.sent, summary.failed, summary.retrying) == (1, 2, 0)
    assert entry(REP1_MIA).status == entry(REP1_AVA).status == ledger.FAILED


def test_every_claim_refused_in_a_run_is_counted_as_retrying(
    service: Settings, ses: SESV2Client
) -> None:
    # Given DynamoDB refuses the claims of Mia's and Ava's notices
    three_borrowers()

    # When the run goes through
    both = dynamodb_error(
        "UpdateItem",
        "AccessDeniedException",
        lambda body: for_key(REP1_MIA)(body) or for_key(REP1_AVA)(body),
    )
    with both, pytest.raises(DeliveryIncomplete) as raised:
        run("repayment_reminders", MONDAY, ses)

    # Then Ben is mailed and both others are left due, each counted
    summary = raised.value.summary
    assert (summary.sent, summary.retrying) == (1, 2)
    assert summary.errors == ["claim failed: AccessDeniedException"] * 2


def test_each_part_of_a_digest_whose_claim_is_refused_is_counted_as_retrying(
    service: Settings, ses: SESV2Client
) -> None:
    # Given Brooke's digest covers two stale applications, and DynamoDB refuses the claims
    # of both its parts
    f.stale_digest_of_two()

    def claim(body: dict[str, Any]) -> bool:
        return {"S": ledger.CLAIMED} in body.get("ExpressionAttributeValues", {}).values()

    # When the stale check runs
    refused = dynamodb_error("UpdateItem", "AccessDeniedException", claim)
    with refused, pytest.raises(DeliveryIncomplete) as raised:
        run("stale_applications", MONDAY, ses)

    # Then nothing is sent, and each part of the one digest is counted as left due
    summary = raised.value.summary
    assert (summary.sent, summary.retrying, summary.emails_sent) == (0, 2, 0)
    assert summary.errors == ["claim failed: AccessDeniedException"] * 2
    assert sent_emails() == []


def test_a_digest_part_whose_record_is_refused_leaves_the_other_parts_recorded(
    service: Settings, ses: SESV2Client
) -> None:
    # Given Brooke's digest covers two stale applications, and DynamoDB refuses to record
    # the first part as sent
    f.stale_digest_of_two()
    refused: list[str] = []

    def first_sent(body: dict[str, Any]) -> bool:
        if refused or {"S": ledger.SENT} not in body.get("ExpressionAttributeValues", {}).values():
            return refused != [] and body["Key"]["id"]["S"] == refused[0]
        refused.append(body["Key"]["id"]["S"])
        return True

    # When the stale check sends the digest
    with dynamodb_error("UpdateItem", "AccessDeniedException", first_sent):
        summary = run("stale_applications", MONDAY, ses)

    # Then the digest went out once; the refused part stays claimed, the other is sent
    assert summary.emails_sent == 1
    [error] = summary.errors
    assert error.startswith("recording sent failed: UpdateError: ")
    assert "AccessDeniedException" in error
    statuses = {
        e.item_id: e.status
        for e in Notification.scan(consistent_read=True)
        if e.kind == "stale_applications"
    }
    assert sorted(statuses.values()) == [ledger.CLAIMED, ledger.SENT]


def test_a_message_is_dated_in_business_time_by_the_runs_clock(
    service: Settings, ses: SESV2Client
) -> None:
    # Given rep-1 due to Ben, Mia and Ava
    three_borrowers()

    # When the run sends at 09:00 in Sydney (22:00 the day before in UTC)
    run("repayment_reminders", MONDAY, ses)

    # Then each message's Date is that instant, written in Sydney's offset
    dates = {str(sent.message["Date"]) for sent in sent_emails()}
    assert dates == {"Mon, 23 Nov 2026 09:00:00 +1100"}


def test_each_message_carries_the_send_token_of_its_ledger_entry(
    service: Settings, ses: SESV2Client, aws_calls: Callable[[], list[AwsCall]]
) -> None:
    # Given rep-1 is due to Ben, Mia and Ava
    three_borrowers()

    # When the run sends their reminders through the stage's configuration set (its own mailer)
    run("repayment_reminders", MONDAY, None)

    # Then each message is tagged with the token its ledger entry holds, for SES's events
    sends = [c.params for c in aws_calls() if c.operation == "SendEmail"]
    tagged = sorted(tag["Value"] for s in sends for tag in s["EmailTags"])
    entries = sorted(str(Notification.get(k).send_token) for k in (REP1_BEN, REP1_MIA, REP1_AVA))
    assert [tag["Name"] for s in sends for tag in s["EmailTags"]] == ["send_token"] * 3
    assert tagged == entries
    assert len(set(tagged)) == 3


def test_every_notice_rejected_in_a_run_is_counted_and_logged_with_its_reason(
    service: Settings, ses: SESV2Client, stdout_json: Logs
) -> None:
    # Given SES rejects Mia's and Ava's reminders
    three_borrowers()

    # When the run sends (a permanent rejection does not fail it)
    rejecting = {MIA, AVA}
    with ses_faults(ses, lambda to: ses_error("MessageRejected", 400) if to in rejecting else None):
        summary = run("repayment_reminders", MONDAY, ses)

    # Then both are counted as failed and each is logged with its key and SES's reason
    assert (summary.sent, summary.failed) == (1, 2)
    records = logged(stdout_json, "notice rejected permanently")
    assert sorted((r["check"], tuple(r["keys"]), r["reason"]) for r in records) == [
        ("repayment_reminders", (key,), "MessageRejected: injected")
        for key in sorted((REP1_MIA, REP1_AVA))
    ]


@pytest.mark.parametrize(
    ("answer", "status", "subject_kept", "incomplete"),
    [
        (ses_error("InternalFailure", 500), ledger.UNKNOWN, True, False),
        (ses_error("MessageRejected", 400), ledger.FAILED, True, False),
        (ses_error("TooManyRequestsException", 429), ledger.PENDING, False, True),
    ],
    ids=["unknown", "failed", "released"],
)
def test_each_outcome_is_stamped_with_the_run_time_and_keeps_the_subject_sent(
    service: Settings,
    ses: SESV2Client,
    answer: Exception,
    status: str,
    subject_kept: bool,
    incomplete: bool,
) -> None:
    # Given SES answers Mia's send with an error, and Ben's and Ava's normally
    three_borrowers()

    # When the run goes through (only a released notice makes it end incomplete)
    ending = pytest.raises(DeliveryIncomplete) if incomplete else nullcontext()
    with ses_faults(ses, lambda to: answer if to == MIA else None), ending:
        run("repayment_reminders", MONDAY, ses)

    # Then Mia's entry is in its status, stamped with the run's time, and (when SES may
    # have it, or an operator must act on it) carries the subject that went to SES
    mias, bens = entry(REP1_MIA), entry(REP1_BEN)
    assert (mias.status, mias.updated_at) == (status, NOW)
    assert bens.status == ledger.SENT
    assert bens.subject
    assert (mias.subject == bens.subject) is subject_kept


# --- a digest: several parts, each counted -------------------------------------------------

STALE_MONDAY = sydney("2026-11-23 12:00")
# Exactly 14 days in their stage on Monday: alerted in one digest to Brooke.
FORTNIGHT_AGO = "2026-11-09T10:00:00+11:00"


def digest_of_two() -> tuple[str, str]:
    """app-1 and app-2, stale on Monday in one digest to Brooke; their parts' ledger keys."""
    f.crm()
    f.application(stage_last_updated=FORTNIGHT_AGO)
    f.application("app-2", reference_number="APP-1002", stage_last_updated=FORTNIGHT_AGO)
    kind = registry.kind("stale_applications")
    return (
        kind.key("app-1", "valuation_ordered", FORTNIGHT_AGO, 0),
        kind.key("app-2", "valuation_ordered", FORTNIGHT_AGO, 0),
    )


def abandoned_by_a_dead_run(key: str, app_id: str) -> None:
    """A claim on a digest part by a run that died 45 minutes ago (its lease ran out)."""
    f.claimed_entry(
        key,
        recipient_id="bdm-1",
        email=BROOKE,
        run_id="crashed-run",
        lease_expires_at=NOW - timedelta(minutes=45),
        kind="stale_applications",
        item_id=app_id,
    )


def test_a_digest_part_abandoned_and_one_sent_ambiguously_are_both_counted_failed(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no SES events, a dead run's claim on app-1's part of Brooke's digest, and a
    # send of the digest (app-2's part) that gets a 500 (SES may have taken it)
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    app_1, app_2 = digest_of_two()
    abandoned_by_a_dead_run(app_1, "app-1")

    # When the stale check runs
    with ses_faults(ses, lambda to: ses_error("InternalFailure", 500)):
        summary = run("stale_applications", STALE_MONDAY, ses)

    # Then both parts are counted failed for an operator: the abandoned one and the one
    # whose outcome no SES event will settle
    assert (summary.notices_due, summary.failed, summary.unknown, summary.sent) == (2, 2, 0, 0)
    assert entry(app_1).status == entry(app_2).status == ledger.FAILED


def test_a_digest_part_abandoned_and_one_given_up_are_both_counted_failed(
    service: Settings, ses: SESV2Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given one attempt is the limit, a dead run's claim on app-1's part of Brooke's
    # digest, and SES throttling the digest's send (app-2's part)
    monkeypatch.delenv("SES_CONFIGURATION_SET")
    monkeypatch.setenv("MAX_TRANSIENT_ATTEMPTS", "1")
    app_1, app_2 = digest_of_two()
    abandoned_by_a_dead_run(app_1, "app-1")

    # When the stale check runs
    with ses_faults(ses, lambda to: ses_error("TooManyRequestsException", 429)):
        summary = run("stale_applications", STALE_MONDAY, ses)

    # Then both parts are counted failed, and nothing is left retrying
    assert (summary.failed, summary.retrying, summary.sent) == (2, 0, 0)
    assert entry(app_1).status == entry(app_2).status == ledger.FAILED


def test_a_digest_part_whose_claim_was_refused_and_one_throttled_are_both_retrying(
    service: Settings, ses: SESV2Client
) -> None:
    # Given DynamoDB refuses the claim of app-1's part of Brooke's digest, and SES
    # throttles the digest's send (app-2's part)
    app_1, app_2 = digest_of_two()
    refused = dynamodb_error("UpdateItem", "AccessDeniedException", for_key(app_1))

    # When the stale check runs
    throttled = ses_faults(ses, lambda to: ses_error("TooManyRequestsException", 429))
    with refused, throttled, pytest.raises(DeliveryIncomplete) as raised:
        run("stale_applications", STALE_MONDAY, ses)

    # Then both parts are counted as retrying, each with its error, and app-2's is due again
    summary = raised.value.summary
    assert (summary.retrying, summary.failed, summary.sent) == (2, 0, 0)
    assert summary.errors == [
        "claim failed: AccessDeniedException",
        "TooManyRequestsException: injected",
    ]
    assert entry(app_2).status == ledger.PENDING
