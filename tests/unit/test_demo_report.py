"""`make demo` also writes the ledger report, over a month of seeded history and today's runs."""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import demo
from ops.seed import GONE, TYPO
from tests.report_page import read


def test_the_demo_writes_a_report_of_a_month_of_varied_ledger_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a fresh machine (no saved state)
    outbox = tmp_path / "outbox"
    args = ["--date", "2026-11-23", "--outbox", str(outbox), "--state", str(tmp_path / "s.json")]

    # When the demo runs
    assert demo.main(args) == 0
    printed = capsys.readouterr().out

    # Then outbox/report.html charts notices on each of the 30 days to the run's date ...
    page = read(outbox / "report.html")
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
    assert f"open {outbox / 'report.html'}" in printed

    # When it runs again for the same date, no history is added twice
    assert demo.main(args) == 0
    assert read(outbox / "report.html").rows("outcomes")["all checks"] == total
