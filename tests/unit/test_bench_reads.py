"""``ops/bench_reads.py``: its figures and report, on a small history (counts, not times).

The 100 -> 10,000 measurement runs on DynamoDB Local (``python -m ops.bench_reads``);
here moto's constant capacity per request makes the capacity follow the requests.
"""

from __future__ import annotations

import os

from ops.bench_reads import measure, table


def test_the_reads_bench_reports_each_checks_cost_per_due_notice_and_its_rerun(
    aws: None,
) -> None:
    # When the bench measures the three checks with 2 and 6 handled items and 4 due notices
    result = measure(
        os.environ.get("DYNAMODB_ENDPOINT_URL"), histories=(2, 6), due=4, prefix="test"
    )

    # Then every check sent its 4 due notices at both sizes
    stale, notes, repayments = result.checks
    assert [(c.check, c.small.due, c.large.due) for c in result.checks] == [
        ("stale_applications", 4, 4),
        ("note_reminders", 4, 4),
        ("repayment_reminders", 4, 4),
    ]
    # and the stale rerun made its 2 requests at both sizes, the same as its first run did
    assert (stale.small.rerun_requests, stale.large.rerun_requests) == (2, 2)
    assert stale.small.requests == stale.large.requests
    # and the note and repayment reruns made their one Query of the pending index at
    # both sizes, the same requests per run as their first runs
    for check in (notes, repayments):
        assert (check.small.rerun_requests, check.large.rerun_requests) == (1, 1)
        assert check.small.requests == check.large.requests
    # and the report's worst figures are the worst of the checks
    assert result.rerun_requests == max(c.rerun_requests for c in result.checks) == 2
    assert result.line() == (
        f"reads growth {result.growth:.2f} (history 2->6), "
        f"rerun {result.rerun_requests} requests {result.rerun_rcu:g} RCU"
    )
    assert result.growth == max(c.growth for c in (stale, notes, repayments))
    rows = table(stale).splitlines()
    assert rows[0] == "stale_applications"
    assert rows[3].startswith("| 2 | 4 | ")
    assert rows[-1] == "growth per notice: 1.00"
