"""The operator commands around a run: seed, preview, history, retry-failed, --embedded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time

from chalicelib import ledger, ses_events
from chalicelib.config import Settings
from chalicelib.mailer import ses_client
from chalicelib.models import Application, Notification, Repayment, Staff
from chalicelib.registry import KINDS
from ops import demo, preview
from ops.cli import cli
from tests import factories
from tests.support import (
    FIXTURE_CONFIGURATION_SET,
    REGION,
    SuppressionList,
    ledger_key,
    sent_emails,
    ses_error,
    ses_event,
    ses_faults,
    subjects_by_recipient,
    utc,
)

BEN = "ben.lee@example.net"
MIA = "mia.chen@example.net"
SAM = "sam.author@lender.example.com.au"
NOON = "2026-11-23T01:00:00Z"  # 12:00 on Monday 23 Nov 2026 in Sydney
BEN_UPCOMING = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-1")
MIA_UPCOMING = ledger_key("repayment_upcoming", "rep-1", "2026-11-30", "bor-2")


def invoke(*args: str, clock: str = NOON, stdin: str | None = None) -> Result:
    """Run the CLI with the wall clock frozen at ``clock``."""
    with freeze_time(clock):
        return CliRunner().invoke(cli, list(args), input=stdin)


def failed_keys() -> list[str]:
    """Keys in the sparse failed-notices index."""
    return [entry.id for entry in Notification.by_failure.query(ledger.FAILED)]


# --- seed --------------------------------------------------------------------------------


def test_seed_writes_the_demo_data_set_after_confirmation(service: Settings) -> None:
    result = invoke("seed", "--date", "2026-11-23", stdin="y\n")

    assert result.exit_code == 0, result.output
    assert "Write the demo data set into test-staff, test-borrowers" in result.output
    assert "Seeded for 2026-11-23: 4 staff, 7 borrowers, 7 applications, 5 notes, 9 repayments" in (
        result.stdout
    )
    assert Staff.count() == 4
    assert Application.get("app-1001").stage_last_updated == "2026-11-07T10:30:00+11:00"


def test_seed_writes_nothing_when_not_confirmed(service: Settings) -> None:
    result = invoke("seed", stdin="n\n")

    assert result.exit_code == 1
    assert "Aborted" in result.output
    assert Staff.count() == 0


# --- preview -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "subject", "detail"),
    [
        ("stale_applications", "Stale Application Alert: 3 applications", "<td>ILOO Issued</td>"),
        ("note_reminders", "Note Reminder: Call the valuer", "Chase the valuation report"),
        ("repayment_upcoming", "Upcoming Repayment Reminder: APP-1001 due 28/11/2026", "$2,980.15"),
        (
            "repayment_overdue_3_day",
            "OVERDUE Repayment Notice: APP-1001, 3 days overdue",
            "$2,980.15",
        ),
        ("repayment_overdue_7_day", "URGENT: 7 Days OVERDUE Repayment: APP-1001", "$2,980.15"),
        (
            "repayment_overdue_10_day",
            "ESCALATION: 2 Overdue Repayments, 10 to 12 Days",
            "<td>José Núñez, Nguyễn Thị Hoa</td>",
        ),
    ],
)
def test_preview_renders_each_kind_to_an_html_file(
    tmp_path: Path, kind: str, subject: str, detail: str
) -> None:
    out = tmp_path / "previews" / f"{kind}.html"

    result = invoke("preview", kind, "--out", str(out))

    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert f"<title>{subject}</title>" in html
    assert detail in html
    assert str(out) in result.stdout
    # and its plain-text part beside it, greeting the sample person by first name
    text = out.with_suffix(".txt").read_text(encoding="utf-8")
    assert text.startswith(("Hi Zoë,\n", "Hi Hoa,\n", "Hi José,\n"))
    assert "Example Home Loans Pty Ltd, ABN 12 345 678 901" in text
    assert "<p>" not in text
    assert "<td>" not in text
    assert str(out.with_suffix(".txt")) in result.stdout


def test_preview_writes_next_to_the_caller_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)

    result = invoke("--embedded", "preview", "repayment_overdue_10_day")

    assert result.exit_code == 0, result.output
    html = (tmp_path / "preview-repayment_overdue_10_day.html").read_text(encoding="utf-8")
    text = (tmp_path / "preview-repayment_overdue_10_day.txt").read_text(encoding="utf-8")
    assert "<td>José Núñez, Nguyễn Thị Hoa</td>" in html
    assert "- APP-1001: José Núñez, Nguyễn Thị Hoa, $2,980.15 due 13/11/2026" in text
    assert not (tmp_path / ".demo").exists()  # no embedded AWS was needed


def test_a_sample_of_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown email kind 'birthday'; expected one of"):
        preview.sample("birthday")


def test_preview_of_an_unknown_kind_lists_the_kinds(tmp_path: Path) -> None:
    result = invoke("preview", "birthday", "--out", str(tmp_path / "x.html"))

    assert result.exit_code == 2
    assert "'birthday' is not one of 'stale_applications', 'note_reminders'," in result.output
    assert "'repayment_overdue_10_day'" in result.output
    assert not (tmp_path / "x.html").exists()


# --- history -----------------------------------------------------------------------------


def two_borrowers_one_rejected() -> None:
    """rep-1's upcoming reminder sent to Mia at noon; SES rejected Ben's."""
    factories.crm(borrowers=2)
    factories.application(borrower_ids=["bor-1", "bor-2"])
    factories.repayment(due_date="2026-11-30")
    rejected = ses_error("MessageRejected", 400, "Email address is not verified.")
    with ses_faults(ses_client(REGION), lambda to: rejected if to == BEN else None):
        invoke("run", "repayment_reminders", "--date", "2026-11-23")


def test_history_of_an_item_shows_what_was_sent_to_whom_and_what_failed(
    service: Settings,
) -> None:
    two_borrowers_one_rejected()

    result = invoke("history", "--item", "rep-1")

    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("2 notice(s) for item rep-1, oldest first:")
    message_id = sent_emails()[0].message_id
    assert (
        "2026-11-23 12:00:00 AEDT  sent     repayment_upcoming to mia.chen@example.net (bor-2), "
        "item rep-1, business date 2026-11-23" in out
    )
    assert f"    sent 2026-11-23 12:00:00 AEDT, SES message id {message_id}" in out
    assert (
        "2026-11-23 12:00:00 AEDT  failed   repayment_upcoming to ben.lee@example.net (bor-1)"
        in out
    )
    assert "    failed: MessageRejected: Email address is not verified." in out
    assert "    subject: Upcoming Repayment Reminder: APP-1001 due 30/11/2026" in out


def test_history_of_a_recipient(service: Settings) -> None:
    two_borrowers_one_rejected()

    result = invoke("history", "--recipient", MIA)
    nobody = invoke("history", "--recipient", "nobody@example.net")

    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"1 notice(s) for recipient {MIA}, oldest first:")
    assert f"    key {MIA_UPCOMING}" in result.stdout
    assert nobody.exit_code == 0
    assert nobody.stdout == "No notices in the ledger for recipient nobody@example.net.\n"


def test_history_shows_accented_and_non_latin_text_as_it_was_sent(service: Settings) -> None:
    # Given Zoë's note, titled in Vietnamese and Spanish, reminded to her and to the BDM
    factories.staff()
    factories.staff("staff-2", "Zoë Papadopoulos", "zoe@lender.example.com.au")
    factories.application()
    factories.note(title="Gọi cho Nguyễn Thị Hoa về José Núñez")
    ran = invoke("run", "note_reminders", "--date", "2026-11-23")
    assert ran.exit_code == 0, ran.output

    # When the operator looks at the note's history and at Zoë's
    by_item = invoke("history", "--item", "note-1")
    by_recipient = invoke("history", "--recipient", "zoe@lender.example.com.au")

    # Then both show the subject as the email carried it
    subject = "Note Reminder: Gọi cho Nguyễn Thị Hoa về José Núñez"
    assert by_item.exit_code == by_recipient.exit_code == 0
    assert by_item.stdout.count(f"    subject: {subject}") == 2
    assert f"    subject: {subject}" in by_recipient.stdout
    to_zoe = next(e for e in sent_emails() if e.recipients == ["zoe@lender.example.com.au"])
    assert (to_zoe.subject, to_zoe.message["To"].addresses[0].display_name) == (
        subject,
        "Zoë Papadopoulos",
    )


@pytest.mark.parametrize("args", [[], ["--item", "rep-1", "--recipient", BEN]])
def test_history_needs_exactly_one_of_item_or_recipient(service: Settings, args: list[str]) -> None:
    result = invoke("history", *args)

    assert result.exit_code == 2
    assert "give exactly one of --item ID or --recipient EMAIL" in result.output


def ses_reports(key: str, *names: str) -> None:
    """SES's recorded events ``names`` about the message of ledger entry ``key``."""
    entry = Notification.get(key, consistent_read=True)
    stage = Settings.from_env(
        {**dict(os.environ), "SES_CONFIGURATION_SET": FIXTURE_CONFIGURATION_SET}
    )
    for name in names:
        event = ses_events.parse(
            ses_event(
                name,
                token=entry.send_token,
                message_id=entry.message_id or "ses-message",
                address=entry.recipient_email,
            )
        )
        ses_events.record_event(event, settings=stage, now=utc("2026-11-23 01:10"))


def test_history_shows_what_ses_reported_about_each_message(
    service: Settings, suppression_list: SuppressionList
) -> None:
    # Given Mia's reminder was sent, delivered and then complained of
    two_borrowers_one_rejected()
    ses_reports(MIA_UPCOMING, "send", "delivery", "complaint")

    # When the operator looks at the repayment's history
    shown = invoke("history", "--item", "rep-1").stdout

    # Then the SES events are on Mia's entry
    assert "    SES events: Send, Delivery, Complaint" in shown
    assert "    delivered 2026-11-23 07:00:06 AEDT" in shown
    assert "    complained (marked as spam) 2026-11-23 12:14:39 AEDT" in shown
    assert shown.startswith("2 notice(s) for item rep-1")


def test_history_of_a_recipient_shows_a_hard_bounce_and_the_suppressed_address(
    service: Settings, suppression_list: SuppressionList
) -> None:
    two_borrowers_one_rejected()
    ses_reports(MIA_UPCOMING, "bounce_permanent")

    shown = invoke("history", "--recipient", "Mia.Chen@example.net").stdout
    exact = invoke("history", "--recipient", MIA).stdout

    assert f"{MIA} is suppressed (hard bounce) since 2026-11-23 07:00:08 AEDT" in shown
    assert "until the CRM changes the address" in shown
    assert f"    after {MIA_UPCOMING}, SES message id " in shown
    assert exact.startswith(f"1 notice(s) for recipient {MIA}, oldest first:")
    assert "    bounced 2026-11-23 07:00:08 AEDT: Permanent/General" in exact
    assert exact.count("is suppressed") == 1


# --- retry-failed ------------------------------------------------------------------------


def test_retry_failed_requeues_a_rejected_notice_and_the_next_run_sends_it(
    service: Settings,
) -> None:
    # Given Ben's reminder rejected permanently (his address was not verified)
    two_borrowers_one_rejected()
    assert failed_keys() == [BEN_UPCOMING]
    assert Repayment.get("rep-1").reminder_sent is None

    # When the operator fixed the cause and re-queues the failed notices
    result = invoke("retry-failed", clock="2026-11-23T02:00:00Z")

    # Then Ben's entry is pending again, keeping its attempts and last error
    assert result.exit_code == 0, result.output
    assert f"re-queued {BEN_UPCOMING} (repayment_upcoming to {BEN}): MessageRejected" in (
        result.stdout
    )
    assert "Re-queued 1 failed notice(s)" in result.stdout
    entry = Notification.get(BEN_UPCOMING)
    assert (entry.status, entry.attempts) == ("pending", 1)
    assert entry.last_error == "MessageRejected: Email address is not verified."
    assert entry.failure_reason is None
    assert entry.updated_at == utc("2026-11-23 02:00")
    assert failed_keys() == []
    shown = invoke("history", "--item", "rep-1").stdout
    assert "  pending  repayment_upcoming to ben.lee@example.net" in shown
    assert "    last error: MessageRejected: Email address is not verified." in shown

    # And the next run sends it, and flags the repayment
    again = invoke(
        "run", "repayment_reminders", "--date", "2026-11-23", clock="2026-11-23T03:00:00Z"
    )
    assert again.exit_code == 0, again.output
    assert subjects_by_recipient() == {
        MIA: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"],
        BEN: ["Upcoming Repayment Reminder: APP-1001 due 30/11/2026"],
    }
    assert (Notification.get(BEN_UPCOMING).status, Notification.get(BEN_UPCOMING).attempts) == (
        "sent",
        2,
    )
    assert Repayment.get("rep-1").reminder_sent is True
    assert invoke("retry-failed").stdout.startswith("Re-queued 0 failed notice(s)")


def test_retry_failed_filters_by_kind_and_item(service: Settings) -> None:
    # Given a rejected repayment reminder (Ben) and a rejected note reminder (Sam)
    factories.crm(borrowers=2)
    factories.application(borrower_ids=["bor-1", "bor-2"])
    factories.repayment(due_date="2026-11-30")
    factories.note(remind_date="2026-11-23")
    rejected = ses_error("MessageRejected", 400, "rejected")
    with ses_faults(ses_client(REGION), lambda to: rejected if to in (BEN, SAM) else None):
        invoke("run", "repayment_reminders", "--date", "2026-11-23")
        invoke("run", "note_reminders", "--date", "2026-11-23")
    note_key = ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2")
    assert sorted(failed_keys()) == sorted([BEN_UPCOMING, note_key])

    # When only another item's notices, then only note reminders are re-queued
    other_item = invoke("retry-failed", "--item", "note-9")
    by_kind = invoke("retry-failed", "--kind", "note_reminders", "--item", "note-1")

    # Then only the note reminder is pending again
    assert other_item.stdout.startswith("Re-queued 0 failed notice(s)")
    assert "Re-queued 1 failed notice(s)" in by_kind.stdout
    assert failed_keys() == [BEN_UPCOMING]
    assert Notification.get(note_key).status == "pending"


def test_a_notice_requeued_meanwhile_is_not_requeued_twice(service: Settings) -> None:
    # Given Ben's rejected notice, found by two operators at once
    two_borrowers_one_rejected()
    mine, theirs = list(ledger.failed_entries()), list(ledger.failed_entries())

    # When both re-queue it
    first = ledger.requeue(theirs[0], utc("2026-11-23 02:00"))
    second = ledger.requeue(mine[0], utc("2026-11-23 02:01"))

    # Then only the first one changes it
    assert (first, second) == (True, False)
    assert Notification.get(BEN_UPCOMING).updated_at == utc("2026-11-23 02:00")


def test_retry_failed_knows_every_kind_the_checks_write(service: Settings) -> None:
    # Given the demo data set, which has a notice of every kind due on its date
    invoke("seed", "--date", "2026-11-23", "--yes")

    # When the three checks run
    for check in ("stale_applications", "note_reminders", "repayment_reminders"):
        assert invoke("run", check, "--date", "2026-11-23").exit_code == 0

    # Then the kinds of the ledger's notices (not its schedule entries, which have
    # none) are exactly those `retry-failed --kind` accepts
    kinds = {entry.kind for entry in Notification.scan() if entry.kind is not None}
    assert kinds == set(KINDS)


def test_retry_failed_refuses_an_unknown_kind(service: Settings) -> None:
    result = invoke("retry-failed", "--kind", "birthdays")

    assert result.exit_code == 2
    assert "'birthdays' is not one of 'stale_applications', 'note_reminders'," in result.output


def test_an_interrupted_claim_is_listed_as_failed_until_its_run_records_the_send(
    service: Settings,
) -> None:
    # Given a claim whose run outlived its lease and was marked failed by another run
    claimed_at = utc("2026-11-23 01:00")
    claim = ledger.Claim(BEN_UPCOMING, "repayment_upcoming", "rep-1", "bor-1", BEN, "2026-11-23")
    assert ledger.claim(claim, "slow-run", claimed_at)
    entry = Notification.get(BEN_UPCOMING)
    assert ledger.abandon(entry, claimed_at + ledger.CLAIM_LEASE)
    assert failed_keys() == [BEN_UPCOMING]
    shown = invoke("history", "--recipient", BEN).stdout
    assert "  failed   repayment_upcoming to ben.lee@example.net (bor-1)" in shown
    assert "    failed: interrupted after claiming: SES may or may not have delivered it" in shown
    assert "subject:" not in shown

    # When the slow run finally records that SES accepted it
    ledger.mark_sent(BEN_UPCOMING, "slow-run", "Upcoming", "msg-1", claimed_at + ledger.CLAIM_LEASE)

    # Then it is sent, and no longer among the failed notices
    assert Notification.get(BEN_UPCOMING).status == "sent"
    assert failed_keys() == []


# --- --embedded and the group's options --------------------------------------------------


def test_embedded_commands_share_the_demo_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an empty folder (no AWS, no saved state)
    monkeypatch.chdir(tmp_path)
    state = tmp_path / "state.json"

    # When the demo data is seeded and a check is run on the embedded AWS
    seeded = invoke("--embedded", "--state", str(state), "seed", "--date", "2026-11-23")
    ran = invoke(
        "--embedded", "--state", str(state), "run", "repayment_reminders", "--date", "2026-11-23"
    )

    # Then the emails are in the outbox and the ledger is kept in the state file
    assert seeded.exit_code == 0, seeded.output
    assert ran.exit_code == 0, ran.output
    assert "  sent         7 notice(s) in 6 email(s)" in ran.stdout  # a digest of two
    assert "6 email(s) written to outbox/2026-11-23/" in ran.stdout
    assert len(list((tmp_path / "outbox" / "2026-11-23").glob("*.eml"))) == 6
    history = invoke("--embedded", "--state", str(state), "history", "--item", "rep-today")
    assert "  sent     repayment_upcoming to jose.nunez@example.net (bor-nunez)" in history.stdout

    # And `make demo` on the same state sends no repayment reminder again
    with freeze_time(NOON):
        assert demo.main(["--date", "2026-11-23", "--state", str(state), "--outbox", "o"]) == 0
    report = capsys.readouterr().out
    assert "CRM and ledger loaded from the last run" in report
    assert "URGENT" not in "".join(p.name for p in (tmp_path / "o" / "2026-11-23").glob("*"))
    assert len(list((tmp_path / "o" / "2026-11-23").glob("*.eml"))) == 7  # stale and notes only


def test_embedded_mode_leaves_the_environment_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    before = dict(os.environ)

    result = invoke("--embedded", "--state", str(tmp_path / "s.json"), "provision")

    assert result.exit_code == 0, result.output
    assert "demo-notifications: already exists" in result.stdout
    assert dict(os.environ) == before
    assert (tmp_path / "s.json").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--stage", "dev", "--embedded", "provision"],
            "--stage and --embedded cannot be combined",
        ),
        (["--state", "x.json", "provision"], "--state only applies with --embedded"),
    ],
)
def test_conflicting_group_options_are_usage_errors(args: list[str], message: str) -> None:
    result = invoke(*args)

    assert result.exit_code == 2
    assert message in result.output


def test_verbose_shows_the_json_log_on_stderr(
    service: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    factories.crm()
    factories.application()
    factories.note(remind_date="2026-11-23")

    quiet = invoke("run", "note_reminders", "--date", "2026-11-23", "--dry-run")
    verbose = invoke("-v", "run", "note_reminders", "--date", "2026-11-23", "--dry-run")

    assert '"message":"run summary"' not in quiet.output
    assert '"message":"run summary"' in verbose.stderr
    assert '"message":"run summary"' not in verbose.stdout
    assert "s***@lender.example.com.au" in verbose.stderr  # addresses masked in the log


def test_a_note_reminder_re_queued_after_its_note_was_settled_goes_out_at_the_next_run(
    service: Settings,
) -> None:
    # Given Sam's and Brooke's reminders of note-1 sent at 12:00, so note-1 is settled
    factories.note_for_author_and_bdm()
    assert invoke("run", "note_reminders", "--date", "2026-11-23").exit_code == 0
    # and Sam's then failed as SES's Reject event records it
    sams = ledger_key("note_reminders", "note-1", "2026-11-23", "staff-2")
    Notification(id=sams).update(
        actions=[
            Notification.status.set("failed"),
            Notification.failed_status.set("failed"),
            Notification.failed_at.set(utc("2026-11-23 01:30")),
            Notification.failure_reason.set("rejected by SES: virus"),
        ]
    )

    # When the operator re-queues it and the check runs again
    assert invoke("retry-failed", clock="2026-11-23T02:00:00Z").exit_code == 0
    again = invoke("run", "note_reminders", "--date", "2026-11-23", clock="2026-11-23T03:00:00Z")

    # Then Sam's reminder goes out again, and Brooke's does not
    assert again.exit_code == 0, again.output
    assert subjects_by_recipient()[SAM] == ["Note Reminder: Call the valuer"] * 2
    assert len(subjects_by_recipient()[factories.BROOKE]) == 1


def test_mark_pending_lets_the_checks_find_items_written_before_the_indexes(
    service: Settings,
) -> None:
    # Given a note due today, one due long ago, an unpaid and a paid repayment, all
    # written without the pending marks (before the indexes existed)
    factories.crm(borrowers=2)
    factories.application(borrower_ids=["bor-1", "bor-2"])
    factories.note("note-1", pending_check=None)
    factories.note("note-old", remind_date="2026-10-01", pending_check=None)
    factories.repayment("rep-1", pending_check=None, next_notice_on=None)
    factories.repayment("rep-paid", paid_date="2026-11-20")
    assert invoke("run", "note_reminders", "--date", "2026-11-23").exit_code == 0
    assert sent_emails() == []

    # When the operator marks them
    result = invoke("mark-pending")

    # Then the note inside the catch-up window and the unpaid repayment are marked, and
    # the next runs send their notices
    assert result.exit_code == 0, result.output
    assert "Marked pending: 1 note(s), 1 repayment(s)" in result.stdout
    assert invoke("run", "note_reminders", "--date", "2026-11-23").exit_code == 0
    assert invoke("run", "repayment_reminders", "--date", "2026-11-23").exit_code == 0
    assert sorted(e.subject for e in sent_emails()) == [
        "Note Reminder: Call the valuer",
        "Note Reminder: Call the valuer",
        "Upcoming Repayment Reminder: APP-1001 due 30/11/2026",
        "Upcoming Repayment Reminder: APP-1001 due 30/11/2026",
    ]
