"""The CLI as an operator meets it: options anywhere, stages' regions, pipes, state files,
case-insensitive history in business time, and the failed notices listed and re-queued dry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from chalicelib import ledger
from chalicelib.config import Settings
from chalicelib.mailer import ses_client
from chalicelib.models import Notification
from ops.cli import GLOBAL_FLAGS, GLOBAL_VALUED, cli, hoist_global_options
from ops.stages import PROJECT_DIR, REGION, stage_environment, stage_region
from tests import factories
from tests.support import REGION as TEST_REGION
from tests.support import ledger_key, sent_emails, ses_error, ses_faults, utc

BEN = "ben.lee@example.net"
MIA = "mia.chen@example.net"
NOON = "2026-11-23T01:00:00Z"  # 12:00 on Monday 23 Nov 2026 in Sydney
BEN_UPCOMING = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1")


def invoke(*args: str, clock: str = NOON) -> Result:
    """Run the CLI with the wall clock frozen at ``clock``."""
    with freeze_time(clock):
        return CliRunner().invoke(cli, list(args))


def upcoming_reminders(*, reject_ben: bool = False) -> None:
    """rep-1's upcoming reminder run at noon for Ben and Mia; SES rejects Ben's if asked."""
    factories.crm(borrowers=2)
    factories.application(borrower_ids=["bor-1", "bor-2"])
    factories.repayment(due_date="2026-11-30")
    rejected = ses_error("MessageRejected", 400, "Email address is not verified.")
    with ses_faults(
        ses_client(TEST_REGION), lambda to: rejected if reject_ben and to == BEN else None
    ):
        invoke("run", "repayment_reminders", "--date", "2026-11-23")


# --- global options after the command ----------------------------------------------------


def test_global_options_are_accepted_after_the_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an empty folder and the embedded AWS named after each command
    monkeypatch.chdir(tmp_path)
    state = str(tmp_path / "state.json")

    # When the options come after the command (and one in the --opt=value form)
    seeded = invoke("seed", "--date", "2026-11-23", "--embedded", "--state", state)
    ran = invoke("run", "note_reminders", "--date", "2026-11-23", "--embedded", f"--state={state}")

    # Then they apply as if given before it
    assert seeded.exit_code == 0, seeded.output
    assert ran.exit_code == 0, ran.output
    assert "note_reminders for 2026-11-23:" in ran.stdout
    assert "email(s) written to outbox/2026-11-23/" in ran.stdout
    assert Path(state).exists()


def test_only_the_groups_options_move_and_nothing_after_a_double_dash() -> None:
    commands = {"run", "history"}

    assert hoist_global_options(["run", "note_reminders", "-v", "--dry-run"], commands) == [
        "-v",
        "run",
        "note_reminders",
        "--dry-run",
    ]
    assert hoist_global_options(["--stage", "run", "history", "--embedded"], commands) == [
        "--stage",
        "run",
        "--embedded",
        "history",
    ]
    assert hoist_global_options(["history", "--", "--embedded"], commands) == [
        "history",
        "--",
        "--embedded",
    ]
    assert hoist_global_options(["--help"], commands) == ["--help"]


def test_no_command_takes_an_option_named_like_the_groups() -> None:
    # Moving the group's options from after the command is only safe while this holds
    names = {
        name
        for command in cli.commands.values()
        for param in command.params
        for name in (*param.opts, *param.secondary_opts)
    }

    assert names.isdisjoint(GLOBAL_FLAGS | GLOBAL_VALUED)


def test_a_group_option_after_the_command_still_meets_the_groups_checks() -> None:
    result = invoke("provision", "--stage", "dev", "--embedded")

    assert result.exit_code == 2
    assert "--stage and --embedded cannot be combined" in result.output


# --- --stage takes the stage's region ----------------------------------------------------


def test_a_stage_without_a_region_in_the_environment_uses_its_configured_region(
    aws: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given no region in the environment (the stage's variables restored after the test)
    for name in (*stage_environment("dev"), "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    provisioned = invoke("--stage", "dev", "provision")

    # When the operator looks at the dev stage's ledger
    result = invoke("--stage", "dev", "history", "--item", "rep-1")

    # Then the stage's region (Sydney by default) is used, not an "AWS_REGION is not set" error
    assert provisioned.exit_code == 0, provisioned.output
    assert result.exit_code == 0, result.output
    assert result.stdout == "No notices in the ledger for item rep-1.\n"
    assert os.environ["AWS_DEFAULT_REGION"] == REGION == "ap-southeast-2"


def test_a_stage_names_its_region_with_aws_region_or_gets_the_default(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"stages": {"dev": {}, "eu": {"aws_region": "eu-west-2"}}}), encoding="utf-8"
    )

    assert stage_region("dev", config) == "ap-southeast-2"
    assert stage_region("eu", config) == "eu-west-2"
    with pytest.raises(ValueError, match="unknown stage 'qa'"):
        stage_region("qa", config)


# --- pipes and state files ---------------------------------------------------------------


def test_piping_into_a_reader_that_goes_away_ends_quietly() -> None:
    # Given the CLI writing to a pipe whose reader has already gone (`| head -0`)
    process = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "policy", "--check"],
        cwd=PROJECT_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()

    # When it writes its output
    _, stderr = process.communicate(timeout=120)

    # Then it ends without a traceback or an error line
    assert stderr.decode() == ""
    assert process.returncode in (0, 1)


def test_a_corrupt_state_file_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    state.write_text('{"demo-staff": [', encoding="utf-8")

    result = invoke("--embedded", "--state", str(state), "history", "--item", "rep-1")

    assert result.exit_code == 1
    assert f"Error: cannot load the demo state file {state} (JSONDecodeError: " in result.stderr
    assert "make demo-reset (it also clears outbox/)" in result.stderr
    assert "Traceback" not in result.output
    assert state.read_text(encoding="utf-8") == '{"demo-staff": ['


@pytest.mark.parametrize(
    "command",
    [
        ["run", "note_reminders", "--date", "2026-11-23", "--dry-run"],
        ["retry-failed", "--dry-run"],
        ["history", "--item", "rep-1"],
        ["failed"],
    ],
)
def test_a_dry_run_or_a_look_creates_no_state_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state.json"

    result = invoke("--embedded", "--state", str(state), *command)

    assert result.exit_code == 0, result.output
    assert not state.exists()
    assert not (tmp_path / "outbox").exists()


def test_an_import_dry_run_creates_no_state_file(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    dump = tmp_path / "crm.json"
    dump.write_text(
        json.dumps([{"model": "users.user", "pk": 1, "fields": {"email": "a@b.co"}}]),
        encoding="utf-8",
    )

    result = invoke("--embedded", "--state", str(state), "import", str(dump), "--dry-run")

    assert result.exit_code == 0, result.output
    assert "Would import: 1 staff" in result.stdout
    assert not state.exists()


def test_an_import_of_an_empty_export_exits_1_and_says_why(
    service: Settings, tmp_path: Path
) -> None:
    dump = tmp_path / "empty.json"
    dump.write_text("[]", encoding="utf-8")

    result = invoke("import", str(dump))

    assert result.exit_code == 1
    assert f"{dump} holds none of the CRM's models" in result.stderr
    assert "Imported" not in result.stdout


# --- history: any case, business time ----------------------------------------------------


def test_history_finds_a_recipient_whatever_the_case_and_shows_business_time(
    service: Settings,
) -> None:
    # Given the CRM holds Ben's address in mixed case and his reminder went out at noon
    factories.crm()
    factories.borrower(email="Ben.Lee@Example.NET")
    factories.application()
    factories.repayment(due_date="2026-11-30")
    invoke("run", "repayment_reminders", "--date", "2026-11-23")
    assert [e.recipients for e in sent_emails()] == [["Ben.Lee@Example.NET"]]

    # When the operator types the address in any case
    shown = [invoke("history", "--recipient", a).stdout for a in (BEN, "BEN.LEE@EXAMPLE.NET")]

    # Then both find the notice, with its times in Sydney's time zone
    for out in shown:
        assert "1 notice(s) for recipient " in out
        assert f"2026-11-23 12:00:00 AEDT  sent     repayment_upcoming to {BEN} (bor-1)" in out
        assert "    sent 2026-11-23 12:00:00 AEDT, SES message id " in out


def test_history_finds_an_entry_written_before_addresses_were_lower_cased(
    service: Settings,
) -> None:
    # Given an older entry that holds the address as the CRM wrote it
    factories.ledger_entry(
        "old-entry",
        "repayment_upcoming",
        "2026-06-01",
        email="Old.Case@Example.net",
        at=utc("2026-06-01 02:00"),  # 12:00 AEST: winter time
        item_id="rep-9",
        recipient_id="bor-9",
        run_id="old-run",
    )

    # When the operator types it as stored, or lower-cased
    as_stored = invoke("history", "--recipient", "Old.Case@Example.net").stdout
    lower = invoke("history", "--recipient", "old.case@example.net").stdout

    # Then the stored form finds it, shown in winter time; the lower-cased form cannot
    assert "2026-06-01 12:00:00 AEST  sent     repayment_upcoming to Old.Case@Example.net" in (
        as_stored
    )
    assert lower == "No notices in the ledger for recipient old.case@example.net.\n"


# --- failed and retry-failed --dry-run ---------------------------------------------------


def test_failed_lists_each_failed_notice_with_kind_item_recipient_reason_and_time(
    service: Settings,
) -> None:
    upcoming_reminders(reject_ben=True)

    result = invoke("failed")
    other_kind = invoke("failed", "--kind", "note_reminders")

    assert result.exit_code == 0, result.output
    assert result.stdout == (
        "1 failed notice(s), oldest failure first:\n"
        "2026-11-23 12:00:00 AEDT  repayment_upcoming  item rep-1  to ben.lee@example.net "
        "(bor-1): MessageRejected: Email address is not verified.\n"
        f"    key {BEN_UPCOMING}\n"
    )
    assert other_kind.stdout == "No failed notices.\n"


def test_retry_failed_dry_run_lists_what_it_would_requeue_and_changes_nothing(
    service: Settings,
) -> None:
    upcoming_reminders(reject_ben=True)
    before = Notification.get(BEN_UPCOMING, consistent_read=True)

    result = invoke("retry-failed", "--dry-run")

    assert result.exit_code == 0, result.output
    assert (
        f"would re-queue {BEN_UPCOMING} (repayment_upcoming to {BEN}): "
        "MessageRejected: Email address is not verified."
    ) in result.stdout
    assert "Would re-queue 1 failed notice(s) (dry run: nothing changed)." in result.stdout
    after = Notification.get(BEN_UPCOMING, consistent_read=True)
    assert (after.status, after.failed_status, after.updated_at) == (
        ledger.FAILED,
        ledger.FAILED,
        before.updated_at,
    )
    assert [e.id for e in Notification.by_failure.query(ledger.FAILED)] == [BEN_UPCOMING]
