"""`make demo`: seeded CRM on moto, an outbox on disk, the ledger report, nothing new on a rerun."""

from __future__ import annotations

import contextlib
import email
import io
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import default
from html.parser import HTMLParser
from pathlib import Path

import pytest
from freezegun import freeze_time

from chalicelib.run import RunSummary
from ops import demo
from ops.seed import GONE, TYPO
from ops.stages import PROJECT_DIR
from tests.report_page import read

NOON = "2026-11-23T01:00:00Z"  # 12:00 on Monday 23 Nov 2026 in Sydney


@dataclass(frozen=True)
class DemoRun:
    """One ``make demo`` at noon on 23 Nov 2026: its folder (outbox, state), what it printed."""

    folder: Path
    status: int
    printed: str

    @property
    def outbox(self) -> Path:
        return self.folder / "outbox"


def demo_args(tmp_path: Path, *args: str) -> list[str]:
    """``make demo``'s arguments with its outbox and state in ``tmp_path``."""
    return [
        *args,
        "--outbox",
        str(tmp_path / "outbox"),
        "--state",
        str(tmp_path / "state.json"),
    ]


def run_demo(folder: Path, *args: str) -> DemoRun:
    """``make demo`` at noon on 23 Nov 2026 with its outbox and state in ``folder``."""
    printed = io.StringIO()
    with freeze_time(NOON), contextlib.redirect_stdout(printed):
        status = demo.main(demo_args(folder, *args))
    return DemoRun(folder, status, printed.getvalue())


def copy_of(run: DemoRun, folder: Path) -> Path:
    """A copy of what ``run`` left (outbox and state), to run the demo on again."""
    shutil.copytree(run.folder, folder)
    return folder


# A whole demo (CRM seeded, a month of ledger history, three checks, the report) takes
# seconds, so the tests share one first run on a fresh machine and one rerun of a copy of
# it; each test reads them and runs the demo again only on a copy of its own.
@pytest.fixture(scope="session")
def first_demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``make demo`` for 23 Nov 2026 on a fresh machine (no saved state). Read only."""
    return run_demo(tmp_path_factory.mktemp("first-demo") / "run", "--date", "2026-11-23")


@pytest.fixture(scope="session")
def demo_rerun(first_demo: DemoRun, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """``make demo`` again for the same date on a copy of ``first_demo``'s state. Read only."""
    folder = copy_of(first_demo, tmp_path_factory.mktemp("demo-rerun") / "run")
    return run_demo(folder, "--date", "2026-11-23")


def test_demo_sends_every_kind_once_and_nothing_on_a_rerun(
    first_demo: DemoRun, demo_rerun: DemoRun
) -> None:
    # Given a fresh machine (no saved state), when the demo runs
    assert first_demo.status == 0
    first = first_demo.printed

    # Then every kind of email is in the outbox as .eml with an HTML twin and an index
    folder = first_demo.outbox / "2026-11-23"
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
    assert demo_rerun.status == 0
    second = demo_rerun.printed

    # Then nothing new is sent: the ledger was kept between runs
    assert len(list((demo_rerun.outbox / "2026-11-23").glob("*.eml"))) == 13
    assert "loaded from the last run" in second
    assert "No new emails" in second
    assert "already" not in second  # nothing due was skipped: the checks found nothing due


class Tables(HTMLParser):
    """The text of every cell of every table in a page, by the table's id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: list[list[str]] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self._table = self.tables.setdefault(str(dict(attrs).get("id")), [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self._table[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(page: Path) -> dict[str, list[list[str]]]:
    """The tables of an HTML file, parsed (no browser here)."""
    parser = Tables()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser.tables


def test_the_outbox_index_shows_each_emails_check_kind_recipient_subject_and_time(
    first_demo: DemoRun,
) -> None:
    # When the demo runs on a fresh machine
    assert first_demo.status == 0

    # Then each email's row says which check sent which kind to whom, about what, when
    tables = tables_of(first_demo.outbox / "2026-11-23" / "index.html")
    header, *rows = tables["emails"]
    assert header == ["Check", "Kind", "To", "Subject", "Sent", "Message"]
    assert len(rows) == 13
    by_subject = {row[3]: row for row in rows}
    assert by_subject["ESCALATION: 2 Overdue Repayments, 10 to 12 Days"][:3] == [
        "repayment_reminders",
        "repayment_overdue_10_day",
        by_subject["ESCALATION: 2 Overdue Repayments, 10 to 12 Days"][2],
    ]
    assert by_subject["Stale Application Alert: APP-1004"][:2] == [
        "stale_applications",
        "stale_applications",
    ]
    assert {row[4] for row in rows} == {"2026-11-23 12:00 AEDT"}
    assert all("@" in row[2] for row in rows)
    # And the runs' invalid items are listed with their reasons
    assert tables["skipped"][1:] == [
        ["repayment_reminders", "invalid", "rep-no-amount", "amount is missing"]
    ]


def test_the_outbox_index_escapes_crm_text(tmp_path: Path) -> None:
    # Given an email and an invalid item whose CRM text is markup
    message = EmailMessage()
    message["To"] = "Zed <zed@example.net>"
    message["Subject"] = "<script>alert(1)</script> & co"
    message.set_content("hi")
    message.add_alternative("<p>hi</p>", subtype="html")
    summary = RunSummary(check="note_reminders", business_date="2026-11-23", run_id="r")
    summary.invalid_items.append({"item_id": "<img src=x>", "reason": 'title "<b>"'})
    summary.skipped = 2

    # When the outbox is written
    with demo.embedded_aws(tmp_path / "state.json"):
        demo.write_outbox(
            [demo.Outgoing("m-1", message, bytes(message))], tmp_path / "o", [summary]
        )

    # Then the markup is shown as text, never as elements
    page = (tmp_path / "o" / "index.html").read_text(encoding="utf-8")
    for markup in ("<script>", "<img", "<b>"):
        assert markup not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; co" in page
    tables = tables_of(tmp_path / "o" / "index.html")
    assert tables["emails"][1][3] == "<script>alert(1)</script> & co"
    assert tables["skipped"][1:] == [
        [
            "note_reminders",
            "skipped",
            "2 notice(s)",
            "already in the ledger (sent, failed, or claimed by another run)",
        ],
        ["note_reminders", "invalid", "<img src=x>", 'title "<b>"'],
    ]


@freeze_time("2027-03-01T01:00:00Z")
def test_a_demo_for_another_date_than_the_state_was_seeded_for_says_so_and_how_to_reset(
    first_demo: DemoRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a demo state seeded for 23 Nov 2026
    folder = copy_of(first_demo, tmp_path / "run")

    # When the demo runs for 1 Mar 2027
    demo.main(demo_args(folder, "--date", "2027-03-01"))

    # Then it says plainly which CRM it ran on, and how to get one dated for that day
    out = capsys.readouterr().out
    assert (
        "CRM and ledger loaded from the last run, seeded for 2026-11-23 (98 day(s) later than "
        "this run's date): its items are dated relative to 2026-11-23"
    ) in out
    assert (
        "To see the demo CRM dated relative to 2027-03-01: make demo-reset (it also clears "
        "outbox/), then make demo DATE=2027-03-01"
    ) in out
    assert "already" not in out


@freeze_time(NOON)
def test_a_demo_that_read_nothing_never_claims_it_was_already_delivered(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a saved CRM (from an older version: no seed date) that holds only a staff member
    staff = {"id": {"S": "staff-1"}, "name": {"S": "Ann"}, "email": {"S": "ann@example.net"}}
    (tmp_path / "state.json").write_text(json.dumps({"demo-staff": [staff]}), encoding="utf-8")

    # When the demo runs
    assert demo.main(demo_args(tmp_path, "--date", "2026-11-23")) == 0

    # Then it says nothing was read, and that the CRM's dates are unknown
    out = capsys.readouterr().out
    assert "No new emails: the checks read no CRM item due around 2026-11-23." in out
    assert "the date they were seeded for is not recorded" in out
    assert "make demo-reset (it also clears outbox/), then make demo DATE=2026-11-23" in out
    assert "already" not in out


@freeze_time(NOON)
def test_a_future_date_is_refused_unless_the_demo_is_a_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the demo is asked for next week, then for a dry run of next week
    refused = demo.main(demo_args(tmp_path, "--date", "2026-11-30"))
    refusal = capsys.readouterr().err
    dry = demo.main(demo_args(tmp_path, "--date", "2026-11-30", "--dry-run"))
    listed = capsys.readouterr().out

    # Then the real run is refused as `cli run` refuses it (exit 2), the dry run lists
    assert refused == 2
    assert (
        "date 2026-11-30 is in the future (today is 2026-11-23 in Australia/Sydney); only a dry "
        "run can look ahead (make demo DATE=2026-11-30 DRY_RUN=1)"
    ) in refusal
    assert dry == 0
    assert "dry run: nothing sent, written or saved" in listed
    assert "  would send repayment_upcoming to " in listed
    assert "email(s) would be sent; nothing sent, written or saved." in listed
    # And neither saved a state nor wrote an outbox
    assert not (tmp_path / "state.json").exists()
    assert not (tmp_path / "outbox").exists()


def test_a_corrupt_state_file_is_named_and_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "state.json").write_text("[1, 2", encoding="utf-8")

    status = demo.main(demo_args(tmp_path, "--date", "2026-11-23"))

    err = capsys.readouterr().err
    assert status == 1
    assert f"cannot load the demo state file {tmp_path / 'state.json'} (JSONDecodeError" in err
    assert "make demo-reset (it also clears outbox/)" in err
    assert (tmp_path / "state.json").read_text(encoding="utf-8") == "[1, 2"


@dataclass(frozen=True)
class ShellRun:
    """``make demo`` run from a shell: the folder it ran in, its exit status, its stderr."""

    folder: Path
    returncode: int
    stderr: str


@pytest.fixture(scope="session")
def demo_from_a_shell(tmp_path_factory: pytest.TempPathFactory) -> ShellRun:
    """``python -m ops.demo`` in its own interpreter, in an empty folder (default state path),
    under a locale that encodes text files as ASCII (no UTF-8 mode), its output piped to a
    reader that has already gone (``make demo | head -0``). Shared: read only."""
    folder = tmp_path_factory.mktemp("demo-from-a-shell")
    env = {
        **os.environ,
        "LC_ALL": "C",
        "PYTHONCOERCECLOCALE": "0",
        "PYTHONUTF8": "0",
        "PYTHONPATH": str(PROJECT_DIR),
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "ops.demo", "--date", "2026-11-23", "--outbox", "o"],
        cwd=folder,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None
    process.stdout.close()
    _, stderr = process.communicate(timeout=300)
    return ShellRun(folder, process.returncode, stderr.decode("ascii", "backslashreplace"))


def test_the_demo_piped_into_a_reader_that_goes_away_ends_quietly(
    demo_from_a_shell: ShellRun,
) -> None:
    # Given the demo writing to a pipe whose reader has already gone, when it prints its report

    # Then it ends as the run ended (0), without a traceback, every email written
    assert demo_from_a_shell.stderr == ""
    assert demo_from_a_shell.returncode == 0
    assert len(list((demo_from_a_shell.folder / "o" / "2026-11-23").glob("*.eml"))) == 13


def test_the_demo_writes_accented_names_to_the_outbox_whatever_the_locale(
    demo_from_a_shell: ShellRun,
) -> None:
    # Given a shell whose locale encodes text files as ASCII (no UTF-8 mode), when the demo
    # sends to Zoë Papadopoulos, José Núñez and Nguyễn Thị Hoa

    # Then every email is written, its HTML in UTF-8 (no UnicodeEncodeError after the send)
    assert demo_from_a_shell.returncode == 0, demo_from_a_shell.stderr
    folder = demo_from_a_shell.folder / "o" / "2026-11-23"
    assert len(list(folder.glob("*.eml"))) == 13
    pages = [p.read_text(encoding="utf-8") for p in folder.glob("*.html")]
    for name in ("Hi Zoë,", "Hi José,", "Hi Hoa,", "Zoë Papadopoulos"):
        assert any(name in page for page in pages), name
    # and the state is saved where make demo keeps it by default, its folder made
    assert (demo_from_a_shell.folder / ".demo" / "state.json").is_file()


def test_the_demo_writes_a_report_of_a_month_of_varied_ledger_history(
    first_demo: DemoRun, demo_rerun: DemoRun
) -> None:
    # Given a fresh machine (no saved state), when the demo runs
    assert first_demo.status == 0
    report = first_demo.outbox / "report.html"

    # Then outbox/report.html charts notices on each of the 30 days to the run's date ...
    page = read(report)
    traces = page.traces("notices-per-day")
    (days,) = {tuple(trace["x"]) for trace in traces.values()}
    assert (days[0], days[-1], len(days)) == ("2026-10-25", "2026-11-23", 30)
    assert all(sum(trace["y"][n] for trace in traces.values()) > 0 for n in range(30))
    # ... today's included: the 13 emails' 16 notices (the stale digest covers three
    # applications, the escalation digest two repayments)
    assert sum(trace["y"][-1] for trace in traces.values()) == 16
    # ... with every outcome present, and the two addresses that keep failing listed
    total = page.rows("outcomes")["all checks"]
    assert all(int(figure) > 0 for figure in total), total
    assert {GONE, TYPO} <= set(page.rows("recipients"))
    assert f"open {report}" in first_demo.printed

    # When it runs again for the same date, no history is added twice
    assert demo_rerun.status == 0
    assert read(demo_rerun.outbox / "report.html").rows("outcomes")["all checks"] == total
