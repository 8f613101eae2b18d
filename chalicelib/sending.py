"""Sending at SES's quota: the account's limits, a pacer at its rate, the 24-hour budget.

A run reads its account's send quota from SES once (``GetAccount``), before its first
send, and then sends from several threads through one :class:`Pacer`, so that the
whole run stays under the maximum send rate, and never sends more emails than what
is left of the 24-hour quota (:class:`Sending`).
"""

from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass
from typing import Protocol

# When SES's quota cannot be read, a run sends at the slowest rate any account has
# (the sandbox's 1 email a second) and leaves the 24-hour quota to SES to enforce.
FALLBACK_SEND_RATE = 1.0
# How early a send may go to catch up on the pace after a delay (the window still holds).
CATCH_UP_SECONDS = 0.2


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

    Two rules, checked at a gate one caller at a time, on the times callers really
    pass it:

    - the generic cell rate algorithm: callers go ``1 / rate`` apart, and a caller
      may go up to ``burst`` seconds early, so a sleep that overran or a stalled
      process costs no rate (the next callers catch up);
    - a sliding window: never more than ``per_window`` passes in any ``window``
      seconds, however the callers were delayed, so catching up can never make a
      burst that breaks the account's limit.

    A run paces at 95 % of SES's maximum rate with ``per_window`` the maximum rate
    and ``window`` 1 / 0.95 s: the extra 53 ms of every window is room for the time
    between the gate and SES (building the request, the network), so SES never
    sees more than its maximum rate in one second.
    """

    def __init__(
        self,
        rate: float,
        clock: Clock = SYSTEM_CLOCK,
        *,
        window: float = 1.0,
        per_window: int | None = None,
        burst: float = 0.0,
    ) -> None:
        if not rate > 0:
            raise ValueError(f"a pacer's rate must be positive, got {rate!r}")
        self.rate = rate
        self.interval = 1.0 / rate
        self.window = window
        self.per_window = per_window or max(1, math.floor(rate * window))
        self.burst = burst
        self._clock = clock
        self._gate = threading.Lock()
        self._tat: float | None = None
        self._passes: collections.deque[float] = collections.deque()

    def slow_down(self, factor: float = 0.5, floor: float = 0.0) -> float:
        """Pace at ``factor`` times the current rate (not under ``floor``); return the new rate.

        SES throttling a paced run means something else sends from the account too
        (another run at the same moment): sharing the rate beats being refused.
        """
        with self._gate:
            slower = max(self.rate * factor, floor)
            self.per_window = max(1, math.floor(self.per_window * slower / self.rate))
            self.rate = slower
            self.interval = 1.0 / slower
            return slower

    def wait(self) -> float:
        """Block until this caller may go; return the time it went (on the clock)."""
        with self._gate:
            while True:
                now = self._clock.monotonic()
                while self._passes and self._passes[0] <= now - self.window:
                    self._passes.popleft()
                ready = now if self._tat is None else self._tat - self.burst
                if len(self._passes) >= self.per_window:
                    ready = max(ready, self._passes[0] + self.window)
                if now >= ready:
                    break
                self._clock.sleep(ready - now)
            self._passes.append(now)
            self._tat = (now if self._tat is None else max(self._tat, now)) + self.interval
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
        window: float = 1.0,
        per_window: int | None = None,
    ) -> None:
        self.pacer = Pacer(
            rate, clock, window=window, per_window=per_window, burst=CATCH_UP_SECONDS
        )
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
        if quota is None:
            rate, remaining, read = FALLBACK_SEND_RATE, None, False
        else:
            rate = quota.max_send_rate if quota.max_send_rate > 0 else FALLBACK_SEND_RATE
            remaining, read = quota.remaining, True
        # At most the maximum rate in every 1 / share seconds: SES sees at most the
        # maximum rate in any one second, with (1 / share - 1) s of room for the delay
        # between the gate and SES.
        return cls(
            rate * share,
            remaining,
            max_concurrency,
            clock,
            quota_read=read,
            window=1 / share,
            per_window=max(1, math.floor(rate)),
        )

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
