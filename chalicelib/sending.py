"""Sending at SES's quota: the account's limits, a pacer at its rate, the 24-hour budget.

A run reads its account's send quota from SES once (``GetAccount``), before its first
send, and then sends from several threads through one :class:`Pacer`, so that the
whole run stays under the maximum send rate, and never sends more emails than what
is left of the 24-hour quota (:class:`Sending`).
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

# When SES's quota cannot be read, a run sends at the slowest rate any account has
# (the sandbox's 1 email a second) and leaves the 24-hour quota to SES to enforce.
FALLBACK_SEND_RATE = 1.0


class Clock(Protocol):
    """Monotonic time and sleeping: what a pacer needs (tests inject a fake one)."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back."""

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""


class SystemClock:
    """The process's monotonic clock.

    The functions are bound when this module is imported: pacing is about real
    elapsed time, also where the calendar time is frozen (freezegun in tests).
    """

    _monotonic = staticmethod(time.monotonic)
    _sleep = staticmethod(time.sleep)

    def monotonic(self) -> float:
        """Seconds on the process's monotonic clock."""
        return self._monotonic()

    def sleep(self, seconds: float) -> None:
        """Sleep the calling thread for ``seconds``."""
        self._sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class Pacer:
    """Lets callers from any number of threads through at most ``rate`` a second.

    The generic cell rate algorithm on the times callers really pass: one caller at
    a time waits at the gate for the theoretical time of the next pass (TAT), then
    moves it on by ``1 / rate``. A caller late by up to ``slack`` (a sleep that
    overran) keeps the schedule; one later than that (the process was stalled)
    moves it, so the callers queued behind a stall go on one interval apart, never
    in a burst. Any ``n + 1`` passes therefore span at least ``n / rate - slack``
    seconds, however late any of them was; idle time is not saved up beyond
    ``slack``.
    """

    def __init__(self, rate: float, clock: Clock = SYSTEM_CLOCK, slack: float = 0.0) -> None:
        if not rate > 0:
            raise ValueError(f"a pacer's rate must be positive, got {rate!r}")
        self.rate = rate
        self.interval = 1.0 / rate
        self.slack = slack
        self._clock = clock
        self._gate = threading.Lock()
        self._tat: float | None = None

    def slow_down(self, factor: float = 0.5, floor: float = 0.0) -> float:
        """Pace at ``factor`` times the current rate (not under ``floor``); return the new rate.

        SES throttling a paced run means something else sends from the account too
        (another run at the same moment): sharing the rate beats being refused.
        """
        with self._gate:
            self.rate = max(self.rate * factor, floor)
            self.interval = 1.0 / self.rate
            return self.rate

    def wait(self) -> float:
        """Block until this caller may go; return the time it went (on the clock)."""
        with self._gate:
            now = self._clock.monotonic()
            if self._tat is not None and now < self._tat:
                self._clock.sleep(self._tat - now)
                now = self._clock.monotonic()
            base = now if self._tat is None else max(self._tat, now - self.slack)
            self._tat = base + self.interval
            return now


@dataclass(frozen=True)
class SendQuota:
    """The account's sending limits, as SESv2 ``GetAccount`` reports them."""

    max_send_rate: float
    max_24_hour_send: float
    sent_last_24_hours: float
    sending_enabled: bool = True

    @property
    def remaining(self) -> int | None:
        """Emails the account may still send in the current 24 hours (None: no limit).

        SES reports ``-1`` for an unlimited 24-hour quota; an account whose sending
        is paused may send none.
        """
        if not self.sending_enabled:
            return 0
        if self.max_24_hour_send < 0:
            return None
        return max(0, math.floor(self.max_24_hour_send - self.sent_last_24_hours))


class Sending:
    """One run's sending: its pacer, its share of the 24-hour quota, its concurrency.

    ``reserve``/``give_back`` are called by the thread that hands notices to the
    workers only; the pacer is shared by the workers.
    """

    def __init__(
        self,
        rate: float,
        remaining: int | None,
        max_concurrency: int,
        clock: Clock = SYSTEM_CLOCK,
        *,
        quota_read: bool = True,
        slack: float = 0.0,
    ) -> None:
        self.pacer = Pacer(rate, clock, slack)
        self.remaining = remaining
        self.quota_read = quota_read
        # More sends in flight than the rate allows in a second would only hold claims
        # longer in the pacer: at most one second of sends is claimed ahead.
        self.workers = max(1, min(max_concurrency, math.ceil(rate)))

    @classmethod
    def for_quota(
        cls, quota: SendQuota | None, rate_percent: int, max_concurrency: int, clock: Clock
    ) -> Sending:
        """The sending of a run whose account reported ``quota`` (None: it could not be read)."""
        share = rate_percent / 100
        # Pacing at a share of the maximum rate leaves (1 / share - 1) seconds of room in
        # every second: half of it for a caller's lateness at the gate, half for the
        # time between the gate and SES (building the request, the network).
        slack = (1 / share - 1) / 2
        if quota is None:
            rate, remaining, read = FALLBACK_SEND_RATE, None, False
        else:
            rate = quota.max_send_rate if quota.max_send_rate > 0 else FALLBACK_SEND_RATE
            remaining, read = quota.remaining, True
        return cls(rate * share, remaining, max_concurrency, clock, quota_read=read, slack=slack)

    @property
    def rate(self) -> float:
        """Emails a second this run sends at, at most."""
        return self.pacer.rate

    def reserve(self) -> bool:
        """Take one email of the 24-hour quota for a notice; False when none is left."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def give_back(self) -> None:
        """Return a reserved email that was not sent to SES (the notice was not sendable)."""
        if self.remaining is not None:
            self.remaining += 1
