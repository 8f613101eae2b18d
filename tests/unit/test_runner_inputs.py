"""The runner's inputs: run_check's argument checks and the scheduled event's time."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from chalicelib.runner import event_time, run_check


def test_run_check_rejects_unknown_checks() -> None:
    at = datetime(2026, 11, 23, 9, tzinfo=UTC)

    expected = (
        "unknown check 'birthday_greetings'; expected one of "
        "stale_applications, note_reminders, repayment_reminders"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(expected)}$"):
        run_check("birthday_greetings", at=at, now=at)


@pytest.mark.parametrize("naive", ["at", "now"])
def test_run_check_rejects_naive_datetimes(naive: str) -> None:
    aware = datetime(2026, 11, 23, 9, tzinfo=UTC)
    times = {"at": aware, "now": aware, naive: datetime(2026, 11, 23, 9)}  # noqa: DTZ001

    with pytest.raises(ValueError, match="'at' and 'now' must be timezone-aware"):
        run_check("note_reminders", at=times["at"], now=times["now"])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-22T23:00:00Z", datetime(2026, 11, 22, 23, tzinfo=UTC)),
        ("2026-11-22T23:00:00+00:00", datetime(2026, 11, 22, 23, tzinfo=UTC)),
        ("2026-11-22T23:00:00", datetime(2026, 11, 22, 23, tzinfo=UTC)),
        ("2026-11-23T10:00:00+11:00", datetime(2026, 11, 22, 23, tzinfo=UTC)),
    ],
)
def test_event_time_reads_the_scheduled_instant(raw: str, expected: datetime) -> None:
    parsed = event_time({"time": raw, "detail-type": "Scheduled Event"})

    assert parsed == expected
    assert parsed.tzinfo is not None


def test_event_time_keeps_an_explicit_offset() -> None:
    parsed = event_time({"time": "2026-11-23T10:00:00+11:00"})

    assert parsed.utcoffset() == timedelta(hours=11)
    assert parsed.tzinfo == timezone(timedelta(hours=11))


@pytest.mark.parametrize(
    ("event", "message"),
    [
        ({}, "scheduled event has no 'time' field"),
        ({"time": None}, "scheduled event has no 'time' field"),
        ({"time": 1763852400}, "scheduled event has no 'time' field"),
        ({"time": "yesterday"}, "scheduled event time 'yesterday' is not ISO-8601"),
        ({"time": ""}, "scheduled event time '' is not ISO-8601"),
    ],
)
def test_event_time_rejects_events_without_a_usable_time(
    event: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        event_time(event)
