"""The shared rate limiter: spacing, adaptive decrease on error 18 and gradual recovery (fake clock)."""

from __future__ import annotations

import itertools
import threading

import pytest

from facesync.api.ratelimit import RateLimiter


class FakeClock:
    """A clock that moves only when someone sleeps on it."""

    def __init__(self):
        self.now = 1000.0
        self.lock = threading.Lock()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds


def limiter(qps, clock, **options) -> RateLimiter:
    return RateLimiter(qps, clock=clock, sleep=clock.sleep, margin=0.0, **options)


def send_times(lim: RateLimiter, clock: FakeClock, calls: int) -> list[float]:
    times = []
    for _ in range(calls):
        lim.acquire()
        times.append(clock())
    return times


def max_in_one_second_window(times: list[float]) -> int:
    """The most calls inside any half-open window [t, t + 1) starting at a call, as a server counts."""
    return max(sum(1 for other in times if start <= other < start + 1.0 - 1e-9) for start in times)


def test_no_burst_slots_are_one_interval_apart():
    clock = FakeClock()
    times = send_times(limiter(5, clock), clock, 20)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) == pytest.approx(0.2)
    assert max_in_one_second_window(times) == 5


def test_margin_stretches_the_spacing():
    clock = FakeClock()
    lim = RateLimiter(10, clock=clock, sleep=clock.sleep, margin=0.05)
    times = send_times(lim, clock, 3)
    assert times[1] - times[0] == pytest.approx(0.105)


def test_unlimited_never_waits():
    clock = FakeClock()
    lim = limiter(None, clock)
    assert [lim.acquire() for _ in range(100)] == [0.0] * 100
    lim.throttled()
    lim.accepted()
    assert lim.rate is None and clock() == 1000.0


def test_error_18_halves_the_rate_once_per_window():
    clock = FakeClock()
    lim = limiter(10, clock)
    lim.throttled()
    assert lim.rate == 5
    for _ in range(7):  # every thread of the same crowded window reports its 18
        lim.throttled()
    assert lim.rate == 5
    clock.advance(1.0)
    lim.throttled()
    assert lim.rate == 2.5


def test_rate_never_falls_below_the_floor():
    clock = FakeClock()
    lim = limiter(10, clock, floor=0.5)
    for _ in range(20):
        lim.throttled()
        clock.advance(1.0)
    assert lim.rate == 0.5


def test_recovery_is_additive_and_at_most_once_a_second_up_to_the_cap():
    clock = FakeClock()
    lim = limiter(10, clock, recovery=0.1)
    lim.throttled()
    assert lim.rate == 5
    lim.accepted()  # same second as the decrease: no change yet
    assert lim.rate == 5
    rates = []
    for _ in range(8):
        clock.advance(1.0)
        lim.accepted()
        lim.accepted()  # a second success in the same second adds nothing
        rates.append(lim.rate)
    assert rates == pytest.approx([6, 7, 8, 9, 10, 10, 10, 10])


def test_after_error_18_nobody_sends_before_one_new_interval():
    clock = FakeClock()
    lim = limiter(10, clock)
    lim.acquire()
    lim.throttled()  # rate 5: next slot at least 0.2 s from now
    start = clock()
    lim.acquire()
    assert clock() - start == pytest.approx(0.2)


def test_free_tier_app_converges_below_its_limit():
    """A 2-QPS app driven at the default 10: AIMD settles around the real limit, not at the floor."""
    clock = FakeClock()
    lim = limiter(10, clock)
    window_start, in_window, rejected = clock(), 0, 0
    for _ in range(400):
        lim.acquire()
        if clock() - window_start >= 1.0:
            window_start, in_window = clock() // 1, 0
        in_window += 1
        if in_window > 2:
            rejected += 1
            lim.throttled()
        else:
            lim.accepted()
    assert 0.5 <= lim.rate <= 4
    assert rejected < 200  # most calls got through: the limiter adapted instead of hammering


def test_threads_share_one_schedule():
    clock = FakeClock()
    lim = limiter(4, clock)
    slots = []
    lock = threading.Lock()

    def worker():
        for _ in range(5):
            lim.acquire()
            with lock:
                slots.append(lim._next_slot)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(slots)) == 20  # every reservation got its own slot


def test_rejects_non_positive_qps():
    with pytest.raises(ValueError):
        RateLimiter(0)
