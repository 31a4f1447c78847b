"""The JSON report of an apply (``--report FILE``): every operation's outcome, error and log_id."""

from __future__ import annotations

from facesync.apply.results import OUTCOMES, ApplyResult
from facesync.logs import redact
from facesync.plan.ops import Plan


def report_dict(result: ApplyResult, *, target: str = "", plan: Plan | None = None) -> dict:
    """The JSON report: every operation with its outcome, error and log_id, and the totals. No secrets."""
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
        "verification": {"done": result.verified, "ok": result.verified and not result.problems,
                         "problems": list(result.problems)},
        "operations": operations,
    }
