"""The pacer, the account's send quota and a run's share of it, on a fake clock."""

from __future__ import annotations

import random
import threading

import pytest

from chalicelib.sending import (
    FALLBACK_SEND_RATE,
    SYSTEM_CLOCK,
    Pacer,
    Sending,
    SendQuota,
)
from tests.support import FakeClock


def slots(pacer: Pacer, clock: FakeClock, count: int) -> list[float]:
    """When each of ``count`` calls in a row gets through (the clock follows the sleeps)."""
    return [pacer.wait() for _ in range(count)]


def most_in_any_second(times: list[float]) -> int:
    """The most of ``times`` that fall within one second of each other (to a nanosecond)."""
    return max(sum(1 for t in times if start <= t < start + 1 - 1e-9) for start in times)


def test_the_first_call_goes_at_once_and_the_next_ones_one_interval_apart() -> None:
    # Given a pacer at 4 a second on a fake clock
    clock = FakeClock(100.0)
    pacer = Pacer(4, clock)

    # When 5 calls come in a row
    times = slots(pacer, clock, 5)

    # Then they go at 0, 0.25, 0.5, 0.75 and 1.0 s, having slept for exactly that
    assert times == pytest.approx([100.0, 100.25, 100.5, 100.75, 101.0])
    assert clock.slept == pytest.approx([0.25] * 4)


def test_no_second_holds_more_calls_than_the_rate() -> None:
    clock = FakeClock()
    pacer = Pacer(14, clock)

    times = slots(pacer, clock, 100)

    assert most_in_any_second(times) == 14
    assert times[-1] - times[0] == pytest.approx(99 / 14)


def test_idle_time_is_not_saved_up_for_a_burst() -> None:
    # Given a pacer at 2 a second that has been idle for 10 seconds after one call
    clock = FakeClock()
    pacer = Pacer(2, clock)
    pacer.wait()
    clock.advance(10)

    # When three calls come at once
    times = slots(pacer, clock, 3)

    # Then only the first goes at once; the others wait their interval
    assert times == pytest.approx([10.0, 10.5, 11.0])


def test_a_call_after_its_slot_has_passed_does_not_wait() -> None:
    clock = FakeClock()
    pacer = Pacer(10, clock)
    pacer.wait()
    clock.advance(0.3)

    assert pacer.wait() == pytest.approx(0.3)
    assert clock.slept == []


def test_threads_calling_at_once_go_one_interval_apart() -> None:
    # Given a pacer at 50 a second
    clock = FakeClock()
    pacer = Pacer(50, clock)
    times: list[float] = []
    lock = threading.Lock()

    def call(count: int) -> None:
        for _ in range(count):
            went = pacer.wait()
            with lock:
                times.append(went)

    # When 8 threads call it 25 times each, all at once (the pacer's own lock is what is
    # proved: no DynamoDB is involved; a run's concurrent claims are proved on DynamoDB
    # Local, tests/ddblocal/test_concurrent_sending.py)
    threads = [threading.Thread(target=call, args=(25,)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Then the 200 calls went 1/50 s apart, none together, none skipped
    assert sorted(times) == pytest.approx([n / 50 for n in range(200)])


class OversleepingClock(FakeClock):
    """A fake clock whose sleeps overrun by ``late`` seconds, as a busy machine's do."""

    def __init__(self, late: float) -> None:
        super().__init__()
        self.late = late

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds + self.late)


def test_sleeps_that_overrun_by_less_than_the_burst_do_not_slow_the_pace() -> None:
    # Given a pacer at 4 a second allowed 20 ms early, whose sleeps overrun by 10 ms
    clock = OversleepingClock(late=0.01)
    pacer = Pacer(4, clock, burst=0.02)

    # When 4 calls come in a row
    times = slots(pacer, clock, 4)

    # Then they keep the 250 ms pace (each one 10 ms before its slot, none later)
    assert times == pytest.approx([0.0, 0.24, 0.49, 0.74])


def test_the_window_holds_when_calls_catch_up_after_a_delay() -> None:
    # Given a pacer at 4 a second, at most 4 in any second, allowed a second early
    clock = FakeClock()
    pacer = Pacer(4, clock, per_window=4, burst=1.0)

    # When 6 calls come in a row
    times = slots(pacer, clock, 6)

    # Then 4 go at once, catching up, and the others wait for the window to move on
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.0, 1.0, 1.0])


def test_callers_queued_behind_a_stall_go_one_interval_apart_not_in_a_burst() -> None:
    # Given a pacer at 4 a second whose process then stalls for a second
    clock = FakeClock()
    pacer = Pacer(4, clock, burst=0.02)
    pacer.wait()
    clock.advance(1.0)

    # When three callers that were due during the stall go
    times = slots(pacer, clock, 3)

    # Then the first goes at once and the others an interval (less the burst) apart
    assert times == pytest.approx([1.0, 1.23, 1.48])


def test_no_window_holds_more_calls_than_allowed_whatever_the_delays() -> None:
    # Given a run's pacer at 95 % of 14 a second: at most 14 in any 1 / 0.95 s
    chance = random.Random(7)
    clock = FakeClock()
    window = 1 / 0.95
    pacer = Pacer(14 * 0.95, clock, window=window, per_window=14, burst=0.2)
    times = []

    # When 400 calls come, some late by up to 40 ms, some after stalls of up to 300 ms
    for _ in range(400):
        clock.advance(
            chance.choice([0.0, 0.0, 0.0, chance.uniform(0, 0.04), chance.uniform(0, 0.3)])
        )
        times.append(pacer.wait())

    # Then any 15 of them span more than the window: SES never sees 15 in a second
    assert all(
        later - earlier >= window - 1e-9 for earlier, later in zip(times, times[14:], strict=False)
    )
    # And the pace, delays included, stays near 13.3 a second
    assert 399 / (times[-1] - times[0]) > 12


def test_slowing_down_spaces_the_next_calls_further_apart_but_not_under_the_floor() -> None:
    clock = FakeClock()
    pacer = Pacer(8, clock)
    pacer.wait()

    assert pacer.slow_down(0.5) == 4
    assert slots(pacer, clock, 2) == pytest.approx([0.125, 0.375])
    assert pacer.slow_down(0.1, floor=1.0) == 1.0
    assert pacer.interval == 1.0


@pytest.mark.parametrize("rate", [0, -1.0])
def test_a_pacer_needs_a_positive_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        Pacer(rate)


def test_the_system_clock_moves_forward() -> None:
    before = SYSTEM_CLOCK.monotonic()
    SYSTEM_CLOCK.sleep(0)
    assert SYSTEM_CLOCK.monotonic() >= before


@pytest.mark.parametrize(
    ("quota", "remaining"),
    [
        (SendQuota(14, 50_000, 49_990.0), 10),
        (SendQuota(14, 50_000, 50_000), 0),
        (SendQuota(14, 50_000, 51_000), 0),
        (SendQuota(14, 200, 12.5), 187),
        (SendQuota(14, -1, 5_000), None),
        (SendQuota(14, 50_000, 0, sending_enabled=False), 0),
    ],
    ids=["some-left", "spent", "overspent", "fraction", "unlimited", "paused"],
)
def test_what_is_left_of_the_24_hour_quota(quota: SendQuota, remaining: int | None) -> None:
    assert quota.remaining == remaining


def test_a_run_paces_at_its_share_of_the_maximum_rate() -> None:
    sending = Sending.for_quota(SendQuota(200, 50_000, 0), 95, 20, FakeClock())

    assert sending.rate == pytest.approx(190)
    # At most the maximum rate in 1 / 0.95 s: 53 ms of room in every second.
    assert sending.pacer.per_window == 200
    assert sending.pacer.window == pytest.approx(1 / 0.95)
    assert sending.remaining == 50_000
    assert sending.quota_read
    assert sending.workers == 20


def test_a_slow_account_gets_no_more_workers_than_a_second_of_sends() -> None:
    sending = Sending.for_quota(SendQuota(14, 50_000, 0), 100, 20, FakeClock())

    assert sending.workers == 14


def test_a_quota_that_cannot_be_read_paces_at_the_fallback_rate_with_no_daily_limit() -> None:
    sending = Sending.for_quota(None, 95, 20, FakeClock())

    assert sending.rate == pytest.approx(FALLBACK_SEND_RATE * 0.95)
    assert sending.pacer.per_window == 1
    assert sending.remaining is None
    assert not sending.quota_read
    assert sending.workers == 1


def test_an_account_reporting_no_rate_paces_at_the_fallback_rate() -> None:
    sending = Sending.for_quota(SendQuota(0, 200, 0), 100, 20, FakeClock())

    assert sending.rate == FALLBACK_SEND_RATE


def test_reserved_emails_come_out_of_the_24_hour_quota_until_it_is_spent() -> None:
    sending = Sending(10, 2, 4, FakeClock())

    assert [sending.reserve() for _ in range(3)] == [True, True, False]
    sending.give_back()
    assert [sending.reserve() for _ in range(2)] == [True, False]


def test_an_unlimited_quota_never_runs_out() -> None:
    sending = Sending(10, None, 4, FakeClock())

    assert all(sending.reserve() for _ in range(1000))
    sending.give_back()
    assert sending.remaining is None
