"""``ops.cli report``: the ledger's page for operators, parsed as HTML (no browser here).

The charts are checked through the JSON each one is built from, the tables through
their cells; the ledger is read with one Query per business date, never a Scan.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from freezegun import freeze_time
from mypy_boto3_sesv2 import SESV2Client

from chalicelib import ledger, schedule, suppression
from chalicelib.config import Settings
from chalicelib.models import Notification
from ops.cli import cli
from tests import factories as f
from tests.report_page import read
from tests.support import run, sydney

NOON = "2026-11-23T01:00:00Z"  # 12:00 on Monday 23 Nov 2026 in Sydney
INDEX = "business_date-created_at-index"
HOSTILE = '<script>alert("crm")</script>'


entry = f.ledger_entry


def report(*args: str, clock: str = NOON, out: Path) -> Result:
    """Run ``ops.cli report --out OUT ARGS`` with the wall clock frozen at ``clock``."""
    with freeze_time(clock):
        return CliRunner().invoke(cli, ["report", "--out", str(out), *args])


@pytest.fixture
def dynamodb_requests(tables: Settings) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every DynamoDB request the models' shared client makes during the test."""
    client = Notification._get_connection().connection.client
    seen: list[tuple[str, dict[str, Any]]] = []

    def record(model: Any, params: dict[str, Any], **_: object) -> None:
        seen.append((model.name, params))

    client.meta.events.register("provide-client-params.dynamodb", record)
    yield seen
    client.meta.events.unregister("provide-client-params.dynamodb", record)


def test_the_chart_stacks_each_days_notices_by_kind(tables: Settings, tmp_path: Path) -> None:
    # Given notices on two of three days, one the day before, and the ledger's own records
    entry("n1", "note_reminders", "2026-11-20")
    entry("n2", "note_reminders", "2026-11-20", ledger.FAILED, failure_reason="rejected")
    entry("u1", "repayment_upcoming", "2026-11-20")
    entry("s1", "stale_applications", "2026-11-22", ledger.PENDING)
    entry("old", "note_reminders", "2026-11-19")
    schedule.reschedule("stale_applications", "app-1", sydney("2026-11-21 00:00").date())
    schedule.add_to_set("done#note_reminders#2026-11-20#0", {"note-1"})
    suppression.record(
        "ann@example.net", "BOUNCE", at=sydney("2026-11-20 09:00"), now=sydney("2026-11-20 09:00")
    )

    # When the report covers 20 to 22 November
    out = tmp_path / "report.html"
    result = report("--from", "2026-11-20", "--to", "2026-11-22", out=out)

    # Then the chart has a bar per day and a stack per kind that was sent, counting notices only
    assert result.exit_code == 0, result.output
    chart = read(out).islands["notices-per-day-data"]
    assert chart["layout"]["barmode"] == "stack"
    traces = {t["name"]: (t["type"], t["x"], t["y"]) for t in chart["data"]}
    days = ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert traces == {
        "note_reminders": ("bar", days, [2, 0, 0]),
        "repayment_upcoming": ("bar", days, [1, 0, 0]),
        "stale_applications": ("bar", days, [0, 0, 1]),
    }
    assert "report.html: 4 notice(s) from 2026-11-20 to 2026-11-22" in result.output


def test_the_outcomes_table_counts_sent_failed_deferred_bounced_and_complained_per_check(
    tables: Settings, tmp_path: Path
) -> None:
    # Given the note check's notices in every state, and one sent repayment notice
    bounced = datetime(2026, 11, 21, 2, tzinfo=UTC)
    entry("a", status=ledger.SENT, bounced_at=bounced, bounce_type="Permanent")
    entry("b", status=ledger.SENT, complained_at=bounced)
    entry("c", status=ledger.SENT)
    entry("d", status=ledger.FAILED, failure_reason="MessageRejected: not verified")
    entry("e", status=ledger.PENDING, last_error="Throttling")
    entry("f", status=ledger.UNKNOWN)
    entry("g", status=ledger.CLAIMED)
    entry("r", "repayment_overdue_3_day", status=ledger.SENT)

    # When the report covers that day
    out = tmp_path / "report.html"
    result = report("--from", "2026-11-21", "--to", "2026-11-21", out=out)

    # Then the table and the chart hold each check's figures, and the total row adds them
    assert result.exit_code == 0, result.output
    page = read(out)
    assert page.tables["outcomes"][0] == [
        "check", "notices", "sent", "failed", "deferred", "bounced", "complained"
    ]  # fmt: skip
    assert page.rows("outcomes") == {
        "stale_applications": ["0", "0", "0", "0", "0", "0"],
        "note_reminders": ["7", "3", "1", "3", "1", "1"],
        "repayment_reminders": ["1", "1", "0", "0", "0", "0"],
        "all checks": ["8", "4", "1", "3", "1", "1"],
    }
    traces = page.traces("outcomes-per-check")
    assert {name: trace["y"] for name, trace in traces.items()} == {
        "sent": [0, 3, 1],
        "failed": [0, 1, 0],
        "deferred": [0, 3, 0],
        "bounced": [0, 1, 0],
        "complained": [0, 1, 0],
    }
    assert traces["sent"]["x"] == ["stale_applications", "note_reminders", "repayment_reminders"]
    assert "(4 sent, 1 failed, 3 deferred, 1 bounced, 1 complained)" in result.output


def test_it_lists_the_top_failure_reasons_and_the_recipients_who_failed_repeatedly(
    tables: Settings, tmp_path: Path
) -> None:
    # Given Ann failed twice (once rejected, once bounced, her address in two cases),
    # Ben once, and Cara's mail went out
    rejected = "MessageRejected: Email address is not verified"
    bounced = datetime(2026, 11, 22, 2, tzinfo=UTC)
    entry("a1", business_date="2026-11-21", email="Ann@Example.net", status=ledger.FAILED,
          failure_reason=rejected)  # fmt: skip
    entry("a2", "repayment_upcoming", "2026-11-22", email="ann@example.net",
          bounced_at=bounced, bounce_type="Permanent")  # fmt: skip
    entry("b1", email="ben@example.net", status=ledger.FAILED, failure_reason=rejected)
    entry("c1", email="cara@example.net")

    # When the report covers those days
    out = tmp_path / "report.html"
    result = report("--from", "2026-11-21", "--to", "2026-11-22", out=out)

    # Then the reasons are counted, most frequent first, and only Ann is a repeated failure
    assert result.exit_code == 0, result.output
    page = read(out)
    assert page.rows("reasons") == {rejected: ["2"], "bounced (Permanent)": ["1"]}
    assert page.rows("recipients") == {
        "ann@example.net": [
            "2",
            "note_reminders, repayment_upcoming",
            "2026-11-22",
            "bounced (Permanent)",
        ]
    }


def test_crm_and_ses_text_is_escaped_and_kept_out_of_the_charts(
    tables: Settings, tmp_path: Path
) -> None:
    # Given failures whose reason and address carry markup
    address = '"<img src=x onerror=alert(1)>"@example.net'
    for n in range(2):
        entry(f"x{n}", email=address, status=ledger.FAILED, failure_reason=HOSTILE)

    # When the report is written
    out = tmp_path / "report.html"
    result = report("--from", "2026-11-21", "--to", "2026-11-21", out=out)

    # Then the text shows as text: no element of it, in the tables only
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert HOSTILE not in text
    assert "<img src=x" not in text
    assert "&lt;script&gt;alert(&#34;crm&#34;)&lt;/script&gt;" in text
    page = read(out)
    assert page.rows("reasons") == {HOSTILE: ["2"]}
    assert list(page.rows("recipients")) == [address.lower()]
    charts = json.dumps(page.islands)
    assert "alert" not in charts
    assert "onerror" not in charts
    assert len(page.scripts) == 4  # the two charts' JSON, plotly.js and the few lines using it


def test_the_page_opens_offline_with_plotly_inlined(tables: Settings, tmp_path: Path) -> None:
    # Given one notice
    entry("n1")

    # When the report is written
    out = tmp_path / "report.html"
    report("--from", "2026-11-21", "--to", "2026-11-21", out=out)

    # Then it fetches nothing: no src or stylesheet link, plotly.js is in the page itself
    page = read(out)
    assert page.external == []
    assert all("src" not in script for script in page.scripts)
    text = out.read_text(encoding="utf-8")
    assert "plotly.js v" in text
    assert "Plotly.newPlot(element" in text


def test_the_report_reads_one_query_per_day_and_never_scans(
    tables: Settings, tmp_path: Path, dynamodb_requests: list[tuple[str, dict[str, Any]]]
) -> None:
    # Given notices on two days of a week
    entry("n1", business_date="2026-11-17")
    entry("n2", business_date="2026-11-21")
    dynamodb_requests.clear()

    # When a week is reported
    out = tmp_path / "report.html"
    result = report("--from", "2026-11-17", "--to", "2026-11-23", out=out)

    # Then it made seven Queries of the business-date index, one per day, and nothing else
    assert result.exit_code == 0, result.output
    assert [name for name, _ in dynamodb_requests] == ["Query"] * 7
    assert {params["IndexName"] for _, params in dynamodb_requests} == {INDEX}
    assert "2 notice(s)" in result.output


def test_by_default_it_covers_the_last_30_days_ending_today_in_sydney(
    tables: Settings, tmp_path: Path
) -> None:
    # Given it is already Tuesday 24 November in Sydney (still Monday in UTC)
    entry("today", business_date="2026-11-24")
    entry("first", business_date="2026-10-26")
    entry("too-old", business_date="2026-10-25")

    # When the report runs without a range
    out = tmp_path / "report.html"
    result = report(clock="2026-11-23T14:30:00Z", out=out)

    # Then it covers 26 October to 24 November
    assert result.exit_code == 0, result.output
    (trace,) = read(out).islands["notices-per-day-data"]["data"]
    assert (trace["x"][0], trace["x"][-1], len(trace["x"])) == ("2026-10-26", "2026-11-24", 30)
    assert sum(trace["y"]) == 2
    assert "2 notice(s) from 2026-10-26 to 2026-11-24" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--from", "2026-11-23", "--to", "2026-11-20"), "--from 2026-11-23 is after --to"),
        (("--from", "2025-01-01", "--to", "2026-11-20"), "a report covers at most 366"),
    ],
)
def test_a_range_it_cannot_report_is_a_usage_error(
    tables: Settings, tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    out = tmp_path / "report.html"

    result = report(*args, out=out)

    assert result.exit_code == 2
    assert message in result.output
    assert not out.exists()


def test_an_unreadable_entry_is_skipped_and_listed_with_its_key(
    tables: Settings, tmp_path: Path
) -> None:
    # Given a readable notice, one without a status and one of a kind no check sends any more
    entry("good")
    entry("retired#1", kind="retired_kind")
    f.raw_item(
        tables.tables.notifications,
        {
            "id": {"S": "broken#1"},
            "kind": {"S": "note_reminders"},
            "business_date": {"S": "2026-11-21"},
            "created_at": {"S": "2026-11-20T01:00:00.000000+0000"},
        },
    )

    # When the report covers the day
    out = tmp_path / "report.html"
    result = report("--from", "2026-11-21", "--to", "2026-11-21", out=out)

    # Then the good one is counted and the others are listed with their keys and reasons
    assert result.exit_code == 0, result.output
    page = read(out)
    assert page.rows("outcomes")["all checks"][0] == "1"
    assert page.rows("skipped") == {
        "broken#1": ["unreadable entry: status missing"],
        "retired#1": ["unknown kind 'retired_kind'"],
    }
    assert "skipped broken#1: unreadable entry: status missing" in result.stderr


def test_a_runs_notices_are_in_the_next_report(
    service: Settings, ses: SESV2Client, tmp_path: Path
) -> None:
    # Given the note check sent a reminder to the author and the BDM on 23 November
    f.crm()
    f.application()
    f.note(remind_date="2026-11-23")
    summary = run("note_reminders", sydney("2026-11-23 12:00"), ses)
    assert summary.sent == 2

    # When the report covers that day
    out = tmp_path / "report.html"
    result = report("--from", "2026-11-23", "--to", "2026-11-23", out=out)

    # Then both notices are in the chart and counted as sent
    assert result.exit_code == 0, result.output
    page = read(out)
    assert page.traces("notices-per-day")["note_reminders"]["y"] == [2]
    assert page.rows("outcomes")["note_reminders"] == ["2", "2", "0", "0", "0", "0"]
