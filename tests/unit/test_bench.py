"""`make bench`'s summary line: the worst figure of each benchmark, in the issue's format.

The benchmarks themselves run on DynamoDB Local (`make bench`); here their results are
given, so the line is checked without measuring anything.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ops import bench
from ops.bench_reads import CheckReads, Figures, ReadsBench
from ops.bench_send import SendResult
from ops.coldstart import ColdStart, Ratio


def _reads(check: str, small: tuple[int, float, int, float], large_rcu: float) -> CheckReads:
    requests, rcu, rerun_requests, rerun_rcu = small
    return CheckReads(
        check,
        Figures(100, 40, requests, rcu, rerun_requests, rerun_rcu),
        Figures(10_000, 40, requests, large_rcu, rerun_requests + 1, rerun_rcu * 2),
    )


def _send(quota: float, emails: int, seconds: float, throttles: int) -> SendResult:
    return SendResult(quota, emails, emails, throttles, seconds, seconds, 1.0, 2 * emails, 1.0)


def test_the_summary_line_carries_the_worst_figure_of_each_benchmark() -> None:
    # Given a cheap check and a check whose capacity per notice doubles with history
    reads = ReadsBench(
        (
            _reads("stale_applications", (141, 3.5, 2, 0.5), 3.5),
            _reads("note_reminders", (100, 80.0, 3, 2.0), 160.0),
        )
    )
    # And sending at two quotas, one of them short of its quota and throttled once
    send = [_send(14, 141, 10.0, 0), _send(200, 1001, 10.0, 1)]
    # And two functions' cold starts
    cold = ColdStart(
        imports={
            "check_a": (Ratio(0.220, 0.200), 0.21),
            "check_b": (Ratio(0.300, 0.200), 0.25),
        },
        calls={"check_a": Ratio(0.012, 0.010), "check_b": Ratio(0.030, 0.020)},
    )

    # Then the line is the issue's, with the worst of each
    assert bench.Figures(reads, send, cold).line() == (
        "bench: reads growth 2.00 (history 100->10000), rerun 4 requests 4 RCU, "
        "send 0.50 x quota, 1 throttles, import 1.50 x floor, first call 1.50 x warm"
    )


def test_it_refuses_to_start_without_the_packaged_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When make bench runs before make package built the bundle
    status = bench.main(["--bundle", str(tmp_path / "deployment.zip")])

    # Then it stops before starting anything, saying what to run
    assert status == 1
    assert "run `make package` first" in capsys.readouterr().err
