"""Planning: the diff of Desired against Live (``planner``), its operations (``ops``), and its views
(``render`` for people, ``planfile`` for the reviewed JSON that ``apply`` can run)."""

from facesync.plan.ops import Expect, FaceSource, Operation, OpKind, Plan, Safety
from facesync.plan.planfile import PlanFileError, dump_plan, load_plan, write_plan
from facesync.plan.planner import make_plan, narrow
from facesync.plan.render import render_json, render_markdown, render_text, summarize

__all__ = [
    "Expect",
    "FaceSource",
    "OpKind",
    "Operation",
    "Plan",
    "PlanFileError",
    "Safety",
    "dump_plan",
    "load_plan",
    "make_plan",
    "narrow",
    "render_json",
    "render_markdown",
    "render_text",
    "summarize",
    "write_plan",
]
