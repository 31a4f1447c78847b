"""The retry policy: which kinds are retried, full-jitter back-off, and its bounds."""

from __future__ import annotations

import random

import pytest

from facesync.api.errors import (
    AlreadyExistsError,
    QpsLimitError,
    QuotaExhaustedError,
    TransportError,
    error_for,
)
from facesync.api.retry import RetryPolicy, is_retryable

RETRYABLE = [1, 2, 4, 18, 222201, 222205, 222206, 222300, 222301, 222302, 222303, 222361, 222901, 222916]
FINAL = [3, 6, 17, 19, 110, 222202, 223100, 223101, 223105, 222019]


@pytest.mark.parametrize("code", RETRYABLE)
def test_transient_codes_are_retried(code):
    assert is_retryable(error_for(code))
    policy = RetryPolicy()
    assert policy.next_delay(error_for(code), failures=1, retry=1, elapsed=0, rng=random.Random(1)) is not None


@pytest.mark.parametrize("code", FINAL)
def test_other_codes_stop_at_once(code):
    policy = RetryPolicy()
    assert policy.next_delay(error_for(code), failures=1, retry=1, elapsed=0, rng=random.Random(1)) is None


def test_transport_errors_are_retried():
    assert RetryPolicy().next_delay(TransportError("reset"), failures=1, retry=1, elapsed=0,
                                    rng=random.Random(1)) is not None


def test_quota_errors_say_which_quota():
    daily, total = error_for(17), error_for(19)
    assert isinstance(daily, QuotaExhaustedError) and isinstance(total, QuotaExhaustedError)
    assert "daily" in str(daily) and "total" in str(total)


def test_max_attempts_bounds_failures():
    policy = RetryPolicy(max_attempts=3)
    rng = random.Random(2)
    error = error_for(222901)
    assert policy.next_delay(error, failures=2, retry=2, elapsed=0, rng=rng) is not None
    assert policy.next_delay(error, failures=3, retry=3, elapsed=0, rng=rng) is None
    no_budget = RetryPolicy(max_attempts=3, transport_budget=0)
    assert no_budget.next_delay(TransportError("reset"), failures=3, retry=3, elapsed=0, rng=rng) is None


def test_transport_failures_are_retried_for_a_time_budget_not_a_count():
    """A server restarting for a few seconds must not turn into failed operations."""
    policy = RetryPolicy(max_attempts=3, transport_budget=30)
    rng = random.Random(4)
    error = TransportError("connection refused")
    assert policy.next_delay(error, failures=12, retry=12, elapsed=10, rng=rng) is not None
    assert policy.next_delay(error, failures=12, retry=12, elapsed=30, rng=rng) is None


def test_a_user_update_whose_answer_was_lost_is_never_repeated():
    from facesync.api.errors import AnswerLostError

    lost = AnswerLostError("faceset/user/update: no answer in time")
    assert not is_retryable(lost, "faceset/user/update")  # a late original would wipe what came after
    assert is_retryable(lost, "faceset/user/add")  # a late add is refused as 223105 and changes nothing
    assert is_retryable(TransportError("connection refused"), "faceset/user/update")  # never sent


def test_error_18_is_bounded_by_elapsed_time_only():
    policy = RetryPolicy(max_attempts=3, max_elapsed=60)
    rng = random.Random(3)
    throttle = QpsLimitError(18, "Open api qps request limit reached")
    assert policy.next_delay(throttle, failures=10, retry=30, elapsed=0, rng=rng) is not None
    assert policy.next_delay(throttle, failures=10, retry=30, elapsed=60, rng=rng) is None


def test_no_wait_may_end_after_max_elapsed():
    policy = RetryPolicy(max_elapsed=10, base_delay=8, max_delay=8)
    rng = random.Random(4)
    outcomes = [policy.next_delay(TransportError("x"), failures=1, retry=1, elapsed=5, rng=rng) for _ in range(200)]
    waits = [delay for delay in outcomes if delay is not None]
    assert waits and all(5 + delay <= 10 for delay in waits)
    assert None in outcomes  # draws past the deadline give up


def test_full_jitter_is_uniform_under_an_exponential_cap():
    policy = RetryPolicy(base_delay=0.5, max_delay=4)
    assert [policy.backoff_cap(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    rng = random.Random(5)
    draws = [policy.next_delay(TransportError("x"), failures=1, retry=3, elapsed=0, rng=rng) for _ in range(500)]
    assert all(0 <= delay <= 2 for delay in draws)
    assert min(draws) < 0.2 and max(draws) > 1.8  # spread over the whole range, not clustered at the cap


def test_already_exists_is_not_retried_by_the_client():
    assert not is_retryable(AlreadyExistsError(223105, "face is already exist"))


def test_policy_checks_its_bounds():
    with pytest.raises(ValueError):
        RetryPolicy(max_attempts=0)
