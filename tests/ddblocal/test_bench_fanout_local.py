"""``ops.bench_fanout.measure`` against DynamoDB Local (local tier only): it really
enqueues, consumes and sends every notice, and projects from what it measured."""

from __future__ import annotations

import pytest

from ops.bench_fanout import measure


def test_the_benchmark_measures_both_sides_and_projects_from_them(
    dynamodb_endpoint: str | None,
) -> None:
    assert dynamodb_endpoint is not None, "collected only with --dynamodb=local"

    projection = measure(dynamodb_endpoint, notices=20, ses_latency=0.0)

    assert projection.measured_notices == 20
    assert projection.producer_ms > 0
    assert projection.consumer_ms > 0
    assert projection.wall_seconds == pytest.approx(
        max(projection.producer_seconds, projection.due / projection.consumer_rate)
    )
