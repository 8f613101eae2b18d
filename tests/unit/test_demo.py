"""`make demo`: seeded CRM on moto, an outbox on disk, and nothing new on a second run."""

from __future__ import annotations

import email
import os
import subprocess
import sys
from email.policy import default
from pathlib import Path

import pytest

from ops import demo
from ops.stages import PROJECT_DIR as PROJECT


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
        "Upcoming Repayment Reminder: APP-1005 due 23/11/2026",
        "Upcoming Repayment Reminder: APP-1006 due 28/11/2026",
        "OVERDUE Repayment Notice: APP-1003, 4 days overdue",
        # 8 days overdue: the subject says 8, as the body does
        "URGENT: 8 Days OVERDUE Repayment: APP-1001",
        # Olivia's two escalations, in one digest
        "ESCALATION: 2 Overdue Repayments, 10 to 12 Days",
    }
    assert len(emails) == 13
    assert all(p.with_suffix(".html").exists() for p in emails)
    index = (folder / "index.html").read_text(encoding="utf-8")
    assert "13 email(s)" in index
    assert "Zoë Papadopoulos" in index
    # and every message names the lender, takes replies, and is dated and identified
    messages = [email.message_from_bytes(p.read_bytes(), policy=default) for p in emails]
    for message in messages:
        assert message["From"].addresses[0].display_name == "Example Home Loans"
        assert message["Reply-To"].addresses[0].addr_spec == "loans@lender.example.com.au"
        assert message["Date"].datetime.isoformat() == "2026-11-23T12:00:00+11:00"
        assert message["Message-ID"].endswith("@lender.example.com.au>")
    assert len({str(m["Message-ID"]) for m in messages}) == 13
    zoe = next(p for p in emails if "zoe-papadopoulos" in p.name)
    assert "<p>Hi Zoë,</p>" in zoe.with_suffix(".html").read_text(encoding="utf-8")
    jose = next(m for m in messages if m["To"].addresses[0].username == "jose.nunez")
    assert str(jose["To"]) == "José Núñez <jose.nunez@example.net>"
    # the .eml is the message as SES received it: 7-bit clean, our own encoded words
    assert all(p.read_bytes().isascii() for p in emails)
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


def test_the_demo_writes_accented_names_to_the_outbox_whatever_the_locale(
    tmp_path: Path,
) -> None:
    # Given a shell whose locale encodes text files as ASCII (no UTF-8 mode)
    env = {
        **os.environ,
        "LC_ALL": "C",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONUTF8": "0",
        "PYTHONPATH": str(PROJECT),
    }

    # When the demo sends to Zoë Papadopoulos, José Núñez and Nguyễn Thị Hoa
    done = subprocess.run(
        [sys.executable, "-m", "ops.demo", "--date", "2026-11-23", "--outbox", "o", "--state", "s"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )

    # Then every email is written, its HTML in UTF-8 (no UnicodeEncodeError after the send)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "o" / "2026-11-23"
    assert len(list(folder.glob("*.eml"))) == 13
    pages = [p.read_text(encoding="utf-8") for p in folder.glob("*.html")]
    for name in ("Hi Zoë,", "Hi José,", "Hi Hoa,", "Zoë Papadopoulos"):
        assert any(name in page for page in pages), name
