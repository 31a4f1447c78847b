"""One adaptive rate limiter shared by every thread of a client.

Baidu counts an app's calls per one-second window and answers error 18 above its QPS. A token bucket
with room for more than one token would let a burst of ``qps`` calls through at once and then some more
within the same second, so this limiter has no burst at all: it hands out send slots at least
``1 / rate`` apart. ``qps`` slots then span ``qps - 1`` intervals, and a one-second window can hold at
most ``qps`` of them; a small ``margin`` (default 5 %, i.e. about 50 ms per second) absorbs the jitter
between the moment a thread is allowed to send and the moment the server counts the call.

Adaptive (AIMD, like TCP): every error 18 halves the rate (one halving per second at most, since all the
18s of one crowded window are one signal, not many), never below ``floor``; every second in which a
call was accepted adds ``recovery`` × the cap back, up to the cap. A free-tier app (2 QPS) used with the
default 10 QPS so settles near its real limit after a few rejections, which the retry policy absorbs.

``qps=None`` means no limit (the embedded local library); the limiter then never waits.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

DEFAULT_FLOOR = 0.5  # QPS: never slower than one call every two seconds
DEFAULT_RECOVERY = 0.1  # share of the cap regained per second of accepted calls
DEFAULT_MARGIN = 0.05  # spacing slack against jitter between sending and the server's count
DECREASE_COOLDOWN = 1.0  # seconds: the window length a server counts in


class RateLimiter:
    """Hands out send slots ``1 / rate`` apart; halves ``rate`` on error 18 and regains it slowly."""

    def __init__(
        self,
        qps: float | None,
        *,
        floor: float = DEFAULT_FLOOR,
        recovery: float = DEFAULT_RECOVERY,
        margin: float = DEFAULT_MARGIN,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if qps is not None and qps <= 0:
            raise ValueError("qps must be positive, or None for no limit")
        self.cap = qps
        self.floor = min(floor, qps) if qps is not None else floor
        self.recovery = recovery
        self.margin = margin
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._rate = qps
        self._next_slot = -math.inf
        self._last_decrease = -math.inf
        self._last_change = -math.inf

    @property
    def rate(self) -> float | None:
        """The rate in force now (calls per second), or None when unlimited."""
        return self._rate

    def acquire(self) -> float:
        """Wait for the next send slot; returns the seconds waited."""
        if self._rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            slot = max(now, self._next_slot)
            self._next_slot = slot + (1.0 + self.margin) / self._rate
        wait = slot - now
        if wait > 0:
            self._sleep(wait)
        return max(wait, 0.0)

    def throttled(self) -> None:
        """The server answered error 18: halve the rate (once per window)."""
        if self._rate is None:
            return
        with self._lock:
            now = self._clock()
            if now - self._last_decrease < DECREASE_COOLDOWN:
                return
            self._rate = max(self.floor, self._rate / 2)
            self._last_decrease = self._last_change = now
            # The window that refused us is full: no one sends before one new interval has passed.
            self._next_slot = max(self._next_slot, now + 1.0 / self._rate)

    def accepted(self) -> None:
        """The server took a call at the current rate: regain some speed, at most once a second."""
        if self._rate is None or self._rate >= self.cap:
            return
        with self._lock:
            now = self._clock()
            if now - self._last_change >= 1.0:
                self._rate = min(self.cap, self._rate + self.recovery * self.cap)
                self._last_change = now

    def __repr__(self) -> str:
        return f"RateLimiter(cap={self.cap}, rate={self._rate})"
