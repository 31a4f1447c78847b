"""What happened when a plan ran: one ``OpResult`` per operation, and the ``ApplyResult`` of the run."""

from __future__ import annotations

from dataclasses import dataclass, field

from facesync.plan.ops import Operation, Plan

DONE, ALREADY, FAILED, SKIPPED = "done", "already", "failed", "skipped"
OUTCOMES = (DONE, ALREADY, FAILED, SKIPPED)


@dataclass(frozen=True, slots=True)
class OpResult:
    """What happened to one operation. ``attempts``: API requests it made, retries included."""

    index: int
    operation: Operation
    outcome: str
    error_code: int | None = None
    error_msg: str | None = None
    log_id: int | None = None
    duration_s: float = 0.0
    attempts: int = 0
    face_token: str | None = None  # the token the library answered for an add or update

    @property
    def succeeded(self) -> bool:
        return self.outcome in (DONE, ALREADY)


@dataclass(frozen=True)
class ApplyResult:
    """What an apply did: one ``OpResult`` per operation of ``plan``, and what verification found.

    ``ok`` is True only when every operation succeeded, the run was not stopped and the read-back agrees.
    """

    results: tuple[OpResult, ...]  # one per operation, in plan order
    stopped: str | None = None  # why the run stopped early (quota, credentials, interrupted)
    problems: tuple[str, ...] = ()  # what verification found not as the plan wanted
    verified: bool = False
    duration_s: float = 0.0  # the operations only; verification has its own
    calls: int = 0  # API requests made by the operations, retries included
    verify_s: float = 0.0
    verify_calls: int = 0
    totals: dict = field(default_factory=dict)
    interrupted: bool = False  # Ctrl-C: the caller reports, then re-raises
    plan: Plan | None = None  # the plan that ran, its safety as counted for this run

    @property
    def ok(self) -> bool:
        return self.stopped is None and not self.problems and all(r.succeeded for r in self.results)

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def failures(self) -> tuple[OpResult, ...]:
        return tuple(r for r in self.results if r.outcome == FAILED)
