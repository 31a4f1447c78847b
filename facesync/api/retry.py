"""When to try a failed call again, and how long to wait first.

Transient kinds (``RetryableError``: error 1, 2, 4, 18, 222201, 222205, 222206, 222300-222303, 222361,
222901-222916, and ``TransportError`` for timeouts, resets, HTTP 5xx and non-JSON answers) are retried
with exponential back-off and *full jitter* (a uniform wait between 0 and ``base × 2^(n-1)``, capped):
many threads that failed together do not come back together. Every other kind is final at once, among
them 17 and 19 (``QuotaExhaustedError``: retrying cannot help before the quota resets).

Bounds: at most ``max_attempts`` attempts, and no wait that would end after ``max_elapsed`` seconds
since the first attempt. Error 18 is a throttle signal, not a failure: the rate limiter slows down on it,
and it counts against ``max_elapsed`` only, so an app slower than the configured QPS still completes.

Non-idempotent calls: when a ``user/add`` (or ``group/add``, ``user/copy``) fails in transport, the
server may have committed it before the connection broke. The call is still retried; the retry then
answers "already exists" (223105, 223101, 223102), which the caller sees as ``AlreadyExistsError`` and
treats as done after checking that what exists is what it wanted. Deletes are symmetric ("does not
exist"). The client never guesses on the caller's behalf.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from facesync.api.errors import FaceApiError, QpsLimitError, RetryableError


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, RetryableError)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_elapsed: float = 120.0
    base_delay: float = 0.25  # seconds: the cap of the first wait
    max_delay: float = 20.0  # seconds: no single wait is longer

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.max_elapsed < 0 or self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("durations must not be negative")

    def backoff_cap(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 for the first retry)."""
        return min(self.max_delay, self.base_delay * 2 ** max(retry - 1, 0))

    def next_delay(
        self, error: FaceApiError, *, failures: int, retry: int, elapsed: float, rng: random.Random
    ) -> float | None:
        """Seconds to wait before trying again, or None to give up.

        ``failures``: failed attempts that count against ``max_attempts`` (every one but error 18);
        ``retry``: the number of the retry about to be made, which sets the back-off;
        ``elapsed``: seconds since the first attempt.
        """
        if not is_retryable(error):
            return None
        if not isinstance(error, QpsLimitError) and failures >= self.max_attempts:
            return None
        delay = rng.uniform(0.0, self.backoff_cap(retry))
        if elapsed + delay > self.max_elapsed:
            return None
        return delay
