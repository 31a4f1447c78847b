"""When to try a failed call again, and how long to wait first.

Transient kinds (``RetryableError``: error 1, 2, 4, 18, 222201, 222205, 222206, 222300-222303, 222361,
222901-222916, and ``TransportError`` for timeouts, resets, HTTP 5xx and non-JSON answers) are retried
with exponential back-off and *full jitter* (a uniform wait between 0 and ``base × 2^(n-1)``, capped):
many threads that failed together do not come back together. Every other kind is final at once, among
them 17 and 19 (``QuotaExhaustedError``: retrying cannot help before the quota resets).

Bounds: at most ``max_attempts`` attempts, and no wait that would end after ``max_elapsed`` seconds
since the first attempt. Error 18 is a throttle signal, not a failure: the rate limiter slows down on it,
and it counts against ``max_elapsed`` only, so an app slower than the configured QPS still completes.

Transport failures (no usable answer: a server restarting, a reset, a gateway's 5xx) are retried for
``transport_budget`` seconds (60 by default) whatever ``max_attempts`` says, so a server that is away
for a few seconds costs a few seconds, not failed operations; a budget of 0 counts them as attempts.

Calls that may land late: when a request was sent and no answer came (``AnswerLostError``: a read
timeout, a connection broken after sending), the server may have carried it out, or may still do so
later. A ``user/add`` (or ``group/add``, ``user/copy``) is still retried: its retry answers "already
exists" (223105, 223101, 223102) when the first landed, which the caller checks, and a first that lands
after its retry is refused the same way and changes nothing. Deletes are symmetric. ``user/update`` is
not safe to repeat (``NOT_REPEATABLE``): it replaces every face, so a late original would wipe the faces
added after it. It is never re-sent after a lost answer; the caller reads the library to decide.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from facesync.api.errors import AnswerLostError, FaceApiError, QpsLimitError, RetryableError, TransportError
from facesync.api.protocol import Endpoint

# Endpoints whose repetition is not harmless: a late original can undo what came after its retry.
NOT_REPEATABLE = frozenset({Endpoint.USER_UPDATE})


def is_retryable(error: BaseException, endpoint: str | None = None) -> bool:
    if endpoint in NOT_REPEATABLE and isinstance(error, AnswerLostError):
        return False
    return isinstance(error, RetryableError)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    max_elapsed: float = 120.0
    base_delay: float = 0.25  # seconds: the cap of the first wait
    max_delay: float = 20.0  # seconds: no single wait is longer
    transport_budget: float = 60.0  # seconds in which transport failures are retried, attempts aside

    def __post_init__(self):
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.max_elapsed, self.base_delay, self.max_delay, self.transport_budget) < 0:
            raise ValueError("durations must not be negative")

    def backoff_cap(self, retry: int) -> float:
        """The longest wait before retry number ``retry`` (1 for the first retry)."""
        return min(self.max_delay, self.base_delay * 2 ** max(retry - 1, 0))

    def next_delay(
        self, error: FaceApiError, *, failures: int, retry: int, elapsed: float, rng: random.Random
    ) -> float | None:
        """Seconds to wait before trying again, or None to give up.

        ``failures``: failed attempts that count against ``max_attempts`` (every one but error 18, and
        transport failures while ``transport_budget`` lasts);
        ``retry``: the number of the retry about to be made, which sets the back-off;
        ``elapsed``: seconds since the first attempt.
        """
        if not is_retryable(error):
            return None
        delay = rng.uniform(0.0, self.backoff_cap(retry))
        if isinstance(error, TransportError) and self.transport_budget > 0:
            limit = min(self.max_elapsed, self.transport_budget)
        else:
            limit = self.max_elapsed
            if not isinstance(error, QpsLimitError) and failures >= self.max_attempts:
                return None
        if elapsed + delay > limit:
            return None
        return delay
