"""The chaos soak's own accounting and fault injection: a soak that cannot fail is a defect.

Fast: real templates rendered in memory, and moto's SES server on loopback for the
fault injector (no DynamoDB Local needed).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError
from mypy_boto3_sesv2 import SESV2Client
from mypy_boto3_sesv2.type_defs import SendEmailResponseTypeDef

from chalicelib.checks.stale_applications import StaleRow
from chalicelib.config import Lender
from chalicelib.mailer import Email, Recipient, render, to_mime
from ops.demo import LENDER_ENVIRONMENT
from ops.stages import REGION
from tests.chaos import oracle, soak
from tests.chaos.faults import FaultRates, Injector, SimulatedCrash

SENDER = "reminders@lender.example.com.au"
LENDER = Lender.from_env(LENDER_ENVIRONMENT)
SENT_AT = datetime(2026, 11, 23, 1, tzinfo=UTC)
AUTHOR = Recipient(id="staff-1", name="Jack Thompson", email="staff1@lender.example.com.au")
BORROWER = Recipient(id="bor-03", name="Mia Patel", email="borrower03@example.net")
REPAYMENT = {
    "amount": "$1,037.50",
    "due_date": "09/12/2026",
    "reference": "LN-R01",
    "days_overdue": -3,
    "days_until_due": 3,
}


def _raw(email: Email) -> bytes:
    return to_mime(email, SENDER, date=SENT_AT, lender=LENDER)


def note_email() -> bytes:
    """A note reminder as the check renders it."""
    context = {
        "title": "[N-004] Follow up with the borrower",
        "content": "Chase the documents.",
        "reference": "APP-S01",
        "remind_date": "02/12/2026",
        "role": "author",
    }
    subject = "Note Reminder: [N-004] Follow up with the borrower"
    return _raw(render("note_reminder", AUTHOR, subject, context, lender=LENDER))


def upcoming_email() -> bytes:
    """An upcoming repayment reminder as the check renders it."""
    return _raw(
        render(
            "repayment_upcoming", BORROWER, "Upcoming Repayment Reminder", REPAYMENT, lender=LENDER
        )
    )


def stale_digest() -> bytes:
    """A stale digest of two applications, one of them in its second 7-day cycle."""
    rows = [
        StaleRow("APP-S02", "Valuation Ordered", 22, "$450,000.00", "—"),
        StaleRow("APP-S05", "ILOO Issued", 14, "$525,000.00", "Harbour Finance Brokers"),
    ]
    context = {"applications": rows, "threshold_days": 14}
    return _raw(
        render("stale_applications", AUTHOR, "Stale Application Alert: 2", context, lender=LENDER)
    )


def test_it_reads_each_notice_identity_from_the_message_itself() -> None:
    # Given messages rendered with the project's own templates
    messages = [note_email(), upcoming_email(), stale_digest()]

    # When the oracle reads them back
    found = [oracle.identities(oracle.parse(raw)) for raw in messages]

    # Then each names its recipient, kind and item (a digest one identity per application)
    assert found == [
        [("staff1@lender.example.com.au", "note_reminders", "N-004")],
        [("borrower03@example.net", "repayment_upcoming", "LN-R01#09/12/2026")],
        [
            ("staff1@lender.example.com.au", "stale_applications", "APP-S02#cycle1"),
            ("staff1@lender.example.com.au", "stale_applications", "APP-S05#cycle0"),
        ],
    ]


def test_a_notice_delivered_twice_is_a_duplicate_and_fails_the_soak() -> None:
    # Given the expected notices, and one of them delivered twice
    expected = soak.delivered([note_email().decode(), upcoming_email().decode()])
    deliveries = soak.delivered(
        [note_email().decode(), upcoming_email().decode(), upcoming_email().decode()]
    )

    # When the deliveries are tallied
    result = oracle.tally(expected, deliveries)

    # Then the extra one is counted and the soak fails
    assert (result.expected, result.once, result.duplicates, result.lost) == (2, 1, 1, 0)
    assert not result.passed
    assert oracle.summary_line(1008, 400, result) == (
        "chaos: 1008 invocations, 400 faulted, 2 expected, 1 delivered once, "
        "1 duplicates, 0 lost, 0 unknown"
    )


def test_a_notice_never_delivered_is_lost_and_fails_the_soak() -> None:
    expected = soak.delivered([note_email().decode(), stale_digest().decode()])

    result = oracle.tally(expected, soak.delivered([note_email().decode()]))

    assert (result.expected, result.once, result.duplicates, result.lost) == (3, 1, 0, 2)
    assert not result.passed


def test_a_notice_nobody_expected_counts_as_an_extra_delivery() -> None:
    # Given a delivery the fault-free pass never made (a superseded reminder, say)
    expected = soak.delivered([note_email().decode()])

    result = oracle.tally(
        expected, soak.delivered([note_email().decode(), upcoming_email().decode()])
    )

    assert (result.duplicates, result.unexpected, result.lost) == (1, 1, 0)
    assert not result.passed


def test_ledger_entries_left_unknown_fail_the_soak() -> None:
    expected = soak.delivered([note_email().decode()])

    result = oracle.tally(expected, expected, unknown=1)

    assert (result.once, result.duplicates, result.lost, result.unknown) == (1, 0, 0, 1)
    assert not result.passed
    assert oracle.tally(expected, expected).passed


def test_a_rejected_notice_counts_as_failed_only_when_the_ledger_reports_it() -> None:
    # Given two expected notices, both refused by an injected MessageRejected and never
    # delivered; the ledger reports only the note's send token as failed by it
    note, upcoming = (soak.delivered([raw().decode()]) for raw in (note_email, upcoming_email))
    passed = soak.PassResult(
        rejected=[
            {"identities": note, "send_token": "t-note"},
            {"identities": upcoming, "send_token": "t-upcoming"},
        ],
        failed_tokens={"t-note"},
    )

    # When the deliveries are tallied with the reported failures
    result = oracle.tally([*note, *upcoming], [], reported_failed=soak.reported_failed(passed))

    # Then the reported one is expected-but-failed, the other one is lost
    assert (result.expected, result.once, result.rejected, result.lost) == (2, 0, 1, 1)
    assert result.lost_ids == upcoming
    assert not result.passed


def test_a_reported_rejection_delivered_later_is_delivered_not_failed() -> None:
    expected = soak.delivered([note_email().decode()])

    result = oracle.tally(expected, expected, reported_failed=expected)

    assert (result.once, result.rejected, result.lost) == (1, 0, 0)
    assert result.passed


def test_a_replay_past_the_horizon_that_runs_or_a_recent_one_refused_fails_the_soak() -> None:
    opts = soak.parse_args(["--days", "1"])
    good = soak.PassResult(faulted=5)
    good.replays.update({"beyond the horizon: refused": 2, "within the horizon: ok": 1})
    bad = soak.PassResult(faulted=5)
    bad.replays.update({"beyond the horizon: ok": 1, "within the horizon: refused": 1})

    assert soak.harness_problems(good, opts) == []
    assert soak.harness_problems(bad, opts) == [
        "replays beyond the horizon: ok: 1 (expected the opposite)",
        "replays within the horizon: refused: 1 (expected the opposite)",
    ]


def test_too_few_faulted_invocations_fail_the_soak() -> None:
    opts = soak.parse_args(["--days", "1", "--min-faulted", "1000"])

    problems = soak.harness_problems(soak.PassResult(faulted=999), opts)

    assert problems == ["too few faulted invocations: 999 < --min-faulted 1000"]


# One server for the module: stopping one waits out its half-second poll. Each test has
# clients of its own (the injector instruments them) and reads only the messages
# accepted after it began.
@pytest.fixture(scope="module")
def ses_options() -> Iterator[dict[str, Any]]:
    """moto's SES in server mode on loopback, the sender verified: its clients' options."""
    with soak.moto_ses() as url:
        options: dict[str, Any] = {
            "region_name": REGION,
            "endpoint_url": url,
            "aws_access_key_id": "chaos",
            "aws_secret_access_key": "chaos",
        }
        boto3.client("ses", **options).verify_email_identity(EmailAddress=SENDER)
        yield options


@pytest.fixture
def ses_server(ses_options: dict[str, Any]) -> SESV2Client:
    """A SESv2 client of the module's SES server, sending once (no retries)."""
    return boto3.client(
        "sesv2", config=Config(retries={"mode": "standard", "total_max_attempts": 1}), **ses_options
    )


def _send(client: SESV2Client) -> SendEmailResponseTypeDef:
    return client.send_email(
        FromEmailAddress=SENDER,
        Content={"Raw": {"Data": upcoming_email()}},
        EmailTags=[{"Name": "send_token", "Value": "token-1"}],
        ConfigurationSetName=soak.CONFIGURATION_SET,
    )


def _armed(client: SESV2Client, **rates: float) -> Injector:
    injector = Injector("chaos-soak-notifications")
    injector.instrument_ses(client)
    none = dict.fromkeys(FaultRates().as_dict(), 0.0)
    injector.begin({**none, **rates}, seed=1, now=datetime(2026, 12, 1, tzinfo=UTC))
    return injector


def test_a_lost_ses_response_is_a_message_ses_really_accepted(ses_server: SESV2Client) -> None:
    # Given the injector set to lose every SES answer
    injector = _armed(ses_server, ses_lost_response=1.0)
    before = len(soak.accepted_messages())

    # When a message is sent
    with pytest.raises(ReadTimeoutError):
        _send(ses_server)

    # Then SES holds it, and the injector knows its id and tag for the SES events
    injected, accepted, rejected = injector.end()
    held = soak.accepted_messages()[before:]
    assert [m.id for m in held] == [a["message_id"] for a in accepted]
    assert accepted[0]["tags"]["send_token"] == ["token-1"]
    assert accepted[0]["destination"] == ["borrower03@example.net"]
    assert injected == {"SES response lost after acceptance": 1}
    assert rejected == []


def test_an_injected_rejection_is_journalled_with_its_notices_and_token(
    ses_server: SESV2Client,
) -> None:
    # Given the injector set to reject every message
    injector = _armed(ses_server, ses_message_rejected=1.0)
    before = len(soak.accepted_messages())

    # When a message is sent
    with pytest.raises(ClientError, match="MessageRejected"):
        _send(ses_server)

    # Then SES holds nothing, and the injector knows which notice was refused, by token
    injected, accepted, rejected = injector.end()
    assert soak.accepted_messages()[before:] == []
    assert accepted == []
    assert rejected == [
        {
            "identities": [("borrower03@example.net", "repayment_upcoming", "LN-R01#09/12/2026")],
            "send_token": "token-1",
        }
    ]
    assert injected == {"SES MessageRejected": 1}


def test_a_crash_before_send_reaches_no_one_and_an_error_answer_is_a_client_error(
    ses_server: SESV2Client,
) -> None:
    before = len(soak.accepted_messages())
    injector = _armed(ses_server, crash_before_send=1.0)
    with pytest.raises(SimulatedCrash):
        _send(ses_server)
    assert injector.end()[0] == {"crash between claim and send": 1}

    injector.begin({"ses_throttling": 1.0}, seed=1, now=datetime(2026, 12, 1, tzinfo=UTC))
    with pytest.raises(ClientError, match="Throttling"):
        _send(ses_server)

    assert soak.accepted_messages()[before:] == []


def test_an_injected_internal_failure_is_a_500_that_ses_did_not_accept(
    ses_server: SESV2Client,
) -> None:
    # Given the injector set to answer every send with SES's 500
    injector = _armed(ses_server, ses_internal_failure=1.0)
    before = len(soak.accepted_messages())

    # When a message is sent
    with pytest.raises(ClientError) as raised:
        _send(ses_server)

    # Then botocore reports a 500 InternalFailure, and SES holds nothing
    assert raised.value.response["Error"]["Code"] == "InternalFailure"
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert soak.accepted_messages()[before:] == []
    assert injector.end()[0] == {"SES 500 InternalFailure (not accepted, ambiguous)": 1}
