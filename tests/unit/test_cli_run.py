"""`cli run CHECK`: a manual run for now or a business date, dry runs, and exit codes."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from chalicelib.config import Settings
from chalicelib.mailer import ses_client
from chalicelib.models import Notification, Repayment
from ops.cli import cli
from tests import factories
from tests.support import (
    REGION,
    ledger_key,
    sent_emails,
    ses_error,
    ses_faults,
    subjects_by_recipient,
    utc,
)

BROOKE = "brooke.davis@lender.example.com.au"
SAM = "sam.author@lender.example.com.au"
BEN = "ben.lee@example.net"
NOON = "2026-11-23T01:00:00Z"  # 12:00 on Monday 23 Nov 2026 in Sydney


def invoke(*args: str, clock: str = NOON) -> Result:
    """Run the CLI against the test tables with the wall clock frozen at ``clock``."""
    with freeze_time(clock):
        return CliRunner().invoke(cli, list(args))


def ledger_items(settings: Settings) -> list[dict[str, Any]]:
    """Every item of the ledger table (read directly, not through the service)."""
    client = boto3.client("dynamodb", region_name=REGION)
    return client.scan(TableName=settings.tables.notifications)["Items"]


def test_run_sends_what_is_due_and_prints_the_summary(service: Settings) -> None:
    factories.one_of_each()

    result = invoke("run", "note_reminders", "--date", "2026-11-23")

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "note_reminders for 2026-11-23:"
    assert "  sent         2 notice(s) in 2 email(s)" in result.stdout
    assert "  invalid      0" in result.stdout
    assert subjects_by_recipient() == {
        SAM: ["Note Reminder: Call the valuer"],
        BROOKE: ["Note Reminder: Call the valuer"],
    }


@pytest.mark.parametrize(
    ("check", "would_send"),
    [
        ("stale_applications", [f"stale_applications to Brooke Davis <{BROOKE}>"]),
        (
            "note_reminders",
            [f"note_reminders to Sam Author <{SAM}>", f"note_reminders to Brooke Davis <{BROOKE}>"],
        ),
        ("repayment_reminders", [f"repayment_upcoming to Ben Lee <{BEN}>"]),
    ],
)
def test_a_dry_run_lists_what_would_be_sent_and_changes_nothing(
    service: Settings, check: str, would_send: list[str]
) -> None:
    # Given something due for every check
    factories.one_of_each()

    # When the check runs dry
    result = invoke("run", check, "--date", "2026-11-23", "--dry-run")

    # Then it lists each email it would send, with its recipient and subject
    assert result.exit_code == 0, result.output
    assert "(dry run: nothing sent or written)" in result.stdout
    listed = [line for line in result.stdout.splitlines() if line.startswith("  -> ")]
    assert [line[5:].split(":")[0] for line in listed] == would_send
    assert "  sent " not in result.stdout

    # And changes nothing: no ledger entry, no email, no repayment flag
    assert ledger_items(service) == []
    assert sent_emails() == []
    assert Repayment.get("rep-1").reminder_sent is None


def test_a_dry_run_shows_the_subjects_and_skips_what_was_already_sent(service: Settings) -> None:
    # Given note-1's reminders already sent, and a new note due today
    factories.one_of_each()
    invoke("run", "note_reminders", "--date", "2026-11-23")
    factories.note("note-2", title="Order the valuation", created_by="bdm-1")

    # When the check runs dry
    result = invoke("run", "note_reminders", "--date", "2026-11-23", "--dry-run")

    # Then only the new note's reminder would go out
    assert result.exit_code == 0, result.output
    assert (
        f"  -> note_reminders to Brooke Davis <{BROOKE}>: Note Reminder: Order the valuation"
        in (result.stdout)
    )
    assert "  would send   1 notice(s) in 1 email(s)" in result.stdout
    # (note-1, settled, left the pending index: it is not even read)
    assert "  items read   1" in result.stdout
    assert len(sent_emails()) == 2


def test_without_a_date_the_run_is_now_and_the_window_applies(service: Settings) -> None:
    # Given a note due on 23 Nov, and the clock at 06:00 in Sydney (before the window)
    factories.one_of_each()
    early = "2026-11-22T19:00:00Z"

    # When the check is run without a date
    result = invoke("run", "note_reminders", clock=early)

    # Then it does not act
    assert result.exit_code == 0, result.output
    assert "outside the business-hours window, nothing done" in result.stdout
    assert sent_emails() == []

    # Unless told to ignore the window
    forced = invoke("run", "note_reminders", "--ignore-window", clock=early)
    assert forced.exit_code == 0, forced.output
    assert "note_reminders for 2026-11-23:" in forced.stdout
    assert len(sent_emails()) == 2


def test_a_date_runs_as_of_midday_and_the_ledger_records_the_real_time(service: Settings) -> None:
    # Given a note due on 23 Nov, and the clock at 22:00 that evening (after the window)
    factories.one_of_each()

    # When the check is run for 23 Nov
    result = invoke("run", "note_reminders", "--date", "2026-11-23", clock="2026-11-23T11:00:00Z")

    # Then it acts as of midday, and records when it actually sent
    assert result.exit_code == 0, result.output
    entry = Notification.get(ledger_key("note_reminders", "note-1", "2026-11-23", "bdm-1"))
    assert entry.status == "sent"
    assert entry.sent_at == utc("2026-11-23 11:00")


def test_a_future_date_is_refused_unless_the_run_is_dry(service: Settings) -> None:
    factories.one_of_each()

    refused = invoke("run", "repayment_reminders", "--date", "2026-11-30")
    dry = invoke("run", "repayment_reminders", "--date", "2026-11-30", "--dry-run")

    assert refused.exit_code == 2
    assert "date 2026-11-30 is in the future (today is 2026-11-23" in refused.output
    assert "only a dry run can look ahead" in refused.output
    assert dry.exit_code == 0, dry.output
    assert sent_emails() == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "birthdays"], "'birthdays' is not one of 'stale_applications'"),
        (["run", "note_reminders", "--date", "23/11/2026"], "'23/11/2026' does not match"),
        (["run", "note_reminders", "--date", "2026-02-30"], "'2026-02-30' does not match"),
        (["run"], "Missing argument 'CHECK'"),
    ],
)
def test_bad_arguments_exit_2(service: Settings, args: list[str], message: str) -> None:
    result = invoke(*args)

    assert result.exit_code == 2
    assert message in result.output


def test_a_transient_failure_prints_the_summary_and_exits_1(service: Settings) -> None:
    # Given an upcoming repayment, and SES throttling
    factories.one_of_each()
    throttled = ses_error("TooManyRequestsException", 429, "Maximum sending rate exceeded")

    # When the check runs
    with ses_faults(ses_client(REGION), lambda _: throttled):
        result = invoke("run", "repayment_reminders", "--date", "2026-11-23")

    # Then the summary is printed and the command fails with one line, no traceback
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "  retrying     1" in result.stdout
    assert result.stderr.splitlines()[-1] == (
        "Error: repayment_reminders: 1 notice(s) not sent after transient errors; they will be "
        "retried (TooManyRequestsException: Maximum sending rate exceeded)"
    )
    assert "Traceback" not in result.output


def test_a_permanent_failure_exits_1_and_points_at_retry_failed(service: Settings) -> None:
    factories.one_of_each()
    rejected = ses_error("MessageRejected", 400, "Email address is not verified.")

    with ses_faults(ses_client(REGION), lambda _: rejected):
        result = invoke("run", "repayment_reminders", "--date", "2026-11-23")

    assert result.exit_code == 1
    assert "  failed       1" in result.stdout
    assert "Error: 1 notice(s) failed permanently; see `history` and `retry-failed`" in (
        result.stderr
    )


def test_missing_tables_are_a_one_line_error(aws: None) -> None:
    # Given an account without the tables
    result = invoke("run", "note_reminders", "--date", "2026-11-23")

    # Then the AWS error is reported in one line, exit 1
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    error = result.stderr.strip().splitlines()
    assert len(error) == 1
    assert error[0].startswith("Error: QueryError: ")
    assert "ResourceNotFoundException" in error[0]


def test_a_missing_setting_is_a_usage_error(
    service: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SENDER_EMAIL")

    result = invoke("run", "note_reminders")

    assert result.exit_code == 2
    assert "SENDER_EMAIL is not set" in result.output


def test_a_dry_run_lists_a_digest_once_with_the_items_it_covers(service: Settings) -> None:
    # Given two of Brooke's repayments escalated on the same day
    factories.crm()
    factories.application()
    factories.application("app-2", reference_number="APP-1002")
    factories.repayment(due_date="2026-11-13")
    factories.repayment("rep-2", application_id="app-2", due_date="2026-11-11")

    # When the repayment check runs dry
    result = invoke("run", "repayment_reminders", "--date", "2026-11-23", "--dry-run")

    # Then one line names the digest, its real figures and both repayments' ids
    assert result.exit_code == 0, result.output
    listed = [line for line in result.stdout.splitlines() if line.startswith("  -> ")]
    assert listed == [
        f"  -> repayment_overdue_10_day to Brooke Davis <{BROOKE}>: "
        "ESCALATION: 2 Overdue Repayments, 10 to 12 Days [rep-1, rep-2]"
    ]
    assert "  would send   2 notice(s) in 1 email(s)" in result.stdout
