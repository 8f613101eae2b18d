"""The fan-out projection: from per-notice costs to the wall time of a big day."""

from __future__ import annotations

import pytest

from ops.bench_fanout import project


def test_a_fast_enough_consumer_pool_is_bound_by_the_quota() -> None:
    # 25 consumers at 100 ms a notice could deliver 250/s; the quota allows 200/s
    projection = project(
        0.5, 100.0, measured=300, due=100_000, quota=200.0, concurrency=25, pace=None
    )

    assert projection.consumer_rate == 200.0
    assert projection.bound == "quota"
    assert projection.producer_seconds == pytest.approx(50.0)
    assert projection.wall_seconds == pytest.approx(500.0)


def test_too_few_consumers_bound_the_wall_time_by_their_concurrency() -> None:
    projection = project(
        0.5, 100.0, measured=300, due=100_000, quota=200.0, concurrency=10, pace=None
    )

    assert projection.consumer_rate == pytest.approx(100.0)
    assert projection.bound == "concurrency"
    assert projection.wall_seconds == pytest.approx(1000.0)


def test_paced_consumers_deliver_their_shares_of_the_quota() -> None:
    # 25 consumers fast enough for 13/s each, paced at 8/s: 200/s together
    projection = project(0.5, 75.0, measured=300, due=100_000, quota=200.0, concurrency=25, pace=8)

    assert projection.consumer_rate == pytest.approx(200.0)
    assert projection.wall_seconds == pytest.approx(500.0)
    # and paced at 4/s, they are the bound
    slower = project(0.5, 75.0, measured=300, due=100_000, quota=200.0, concurrency=25, pace=4)
    assert (slower.consumer_rate, slower.bound) == (100.0, "concurrency")


def test_a_producer_slower_than_the_consumers_bounds_the_wall_time() -> None:
    projection = project(10.0, 100.0, measured=300, due=100_000, quota=200.0, concurrency=25)

    assert projection.bound == "producer"
    assert projection.wall_seconds == pytest.approx(1000.0)


def test_the_printed_figures_end_with_the_projection() -> None:
    projection = project(0.33, 104.25, measured=300, due=100_000, quota=200.0, concurrency=25)

    lines = projection.lines()

    assert lines[-1] == "fanout: 100,000 notices in 500 s (8.3 min) at 200/s"
    assert "104.25 ms/notice" in "\n".join(lines)
