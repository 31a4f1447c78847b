"""The JSON report of an apply (``--report FILE``): every operation's outcome, error and log_id."""

from __future__ import annotations

from dataclasses import dataclass

from facesync.apply.order import subject_of
from facesync.apply.results import FAILED, OUTCOMES, SKIPPED, ApplyResult
from facesync.logs import redact
from facesync.plan.ops import Plan


@dataclass(frozen=True)
class Verification:
    """What an apply may claim about the library afterwards, so that no summary says "verified" about
    work that did not run. ``unverified``: the users (``group/user``) and groups whose operations failed
    or were skipped: verification leaves them out, and the library does not hold what the plan wanted
    for them. ``reason``: why nothing was read back at all (None when something was)."""

    ran: bool
    problems: tuple[str, ...]
    unverified: tuple[str, ...]
    reason: str | None

    @property
    def whole_plan(self) -> bool:
        """The library was read back and holds everything the plan wanted."""
        return self.ran and not self.problems and not self.unverified


def verification(result: ApplyResult, mode: str = "quick") -> Verification:
    incomplete = sorted({_subject(r.operation) for r in result.results if r.outcome in (FAILED, SKIPPED)})
    if result.verified:
        return Verification(True, tuple(result.problems), tuple(incomplete), None)
    if result.stopped:
        reason = "the run stopped before the end"
    elif mode == "off":
        reason = "--verify off"
    else:
        reason = "there was nothing to read back"
    return Verification(False, (), tuple(incomplete), reason)


def _subject(op) -> str:
    subject = subject_of(op)
    return f"{subject[0]}/{subject[1]}" if subject else f"group {op.group_id}"


def report_dict(result: ApplyResult, *, target: str = "", plan: Plan | None = None,
                verify: str = "quick") -> dict:
    """The JSON report: every operation with its outcome, error and log_id, and the totals. No secrets."""
    checked = verification(result, verify)
    operations = []
    for r in result.results:
        op = r.operation
        operations.append({
            "index": r.index,
            "key": redact(op.key),
            "kind": op.kind.value,
            "endpoint": op.kind.endpoint,
            "group_id": op.group_id,
            "user_id": op.user_id,
            "outcome": r.outcome,
            "error_code": r.error_code,
            "error_msg": redact(r.error_msg) if r.error_msg else None,
            "log_id": r.log_id,
            "duration_s": round(r.duration_s, 6),
            "attempts": r.attempts,
            "face_token": r.face_token,
        })
    return {
        "format_version": 1,
        "target": redact(target),
        "created_at": getattr(plan, "created_at", "") if plan is not None else "",
        "ok": result.ok,
        "stopped": result.stopped,
        "totals": {**{o: result.count(o) for o in OUTCOMES}, "operations": len(result.results),
                   "calls": result.calls, "verify_calls": result.verify_calls,
                   "duration_s": round(result.duration_s, 3), "verify_s": round(result.verify_s, 3)},
        "verification": {"done": result.verified, "ok": checked.whole_plan,
                         "problems": list(result.problems), "not_verified": list(checked.unverified),
                         "not_done_because": checked.reason},
        "operations": operations,
    }
