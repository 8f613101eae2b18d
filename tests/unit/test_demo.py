"""`make demo`: seeded CRM on moto, an outbox on disk, and nothing new on a second run."""

from __future__ import annotations

import email
from email.policy import default
from pathlib import Path

import pytest

from ops import demo


def test_demo_sends_every_kind_once_and_nothing_on_a_rerun(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a fresh machine (no saved state)
    args = [
        "--date",
        "2026-11-23",
        "--outbox",
        str(tmp_path / "outbox"),
        "--state",
        str(tmp_path / "state" / "state.json"),
    ]

    # When the demo runs
    assert demo.main(args) == 0
    first = capsys.readouterr().out

    # Then every kind of email is in the outbox as .eml with an HTML twin and an index
    folder = tmp_path / "outbox" / "2026-11-23"
    emails = sorted(folder.glob("*.eml"))
    subjects = {
        str(email.message_from_bytes(p.read_bytes(), policy=default)["Subject"]) for p in emails
    }
    assert subjects == {
        "Stale Application Alert: 3 applications",
        "Stale Application Alert: APP-1004",
        "Note Reminder: Call the valuer",
        "Note Reminder: Follow up payslips",
        "Note Reminder: Check settlement date",
        "Upcoming Repayment Reminder",
        "OVERDUE Repayment Notice",
        "URGENT: 7 Days OVERDUE Repayment",
        "ESCALATION: 10 Days Overdue Repayment",
    }
    assert len(emails) == 13
    assert all(p.with_suffix(".html").exists() for p in emails)
    index = (folder / "index.html").read_text()
    assert "13 email(s)" in index
    assert "seeded a new demo CRM" in first
    assert '"_aws"' not in first  # no CloudWatch metrics documents cluttering the table
    assert "rep-no-amount: amount is missing" in first

    # When it runs again for the same date
    assert demo.main(args) == 0
    second = capsys.readouterr().out

    # Then nothing new is sent: the ledger was kept between runs
    assert len(list(folder.glob("*.eml"))) == 13
    assert "loaded from the last run" in second
    assert "No new emails" in second
