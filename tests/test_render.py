"""The three views of a plan. Golden files in tests/golden/ hold the exact outputs of a fixed plan;
regenerate them after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_render.py`` and
review the diff."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest

from facesync import schemas
from facesync.model import Desired, DesiredGroup, DesiredUser, Policy
from facesync.plan.ops import FaceSource, Operation, OpKind, Plan, Safety
from facesync.plan.render import (
    MARKDOWN_MAX_CHARS,
    NO_CHANGES,
    render_json,
    render_markdown,
    render_text,
    summarize,
    user_info_lines,
)
from tests.test_planner import img, live, plan, user

GOLDEN = Path(__file__).parent / "golden"


def fixed_plan() -> Plan:
    """Every kind of operation, a note and an unsafe verdict."""
    d = Desired((
        DesiredGroup("staff", (
            user("alice", "a1", "a2", info='{"name": "Alice"}', resolved=False),
            user("bob", "b1", "b2", info='{"name": "Robert", "team": "ops"}'),
            user("carol", "c9", info="carol"),
            user("erin", "e1", "e2", info="Erin (new desk)"),
            DesiredUser("frank", (img("f1"), img("f3"))),
        )),
        DesiredGroup("visitors", (user("alice", "a1", "a2", info='{"name": "Alice"}', resolved=False),)),
    ), Policy(delete_unlisted_groups=True, delete_threshold_min=5, protected_groups=frozenset({"audit"})),
        digest="sha256:" + "ab" * 32)
    lv = live({"staff": {
        "bob": (("b1", "b0"), '{"name": "Bob", "team": "ops"}'),
        "carol": (("c1", "c2"), "carol"),
        "erin": (("e1", "e2"), "Erin"),
        "frank": (("f1", "f2"), None),
        "dave": (("d1",), None),
    }}, extra_groups=("old_visitors", "audit"))
    return plan(d, lv, qps=10)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN") == "1":
        path.parent.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.read_text(encoding="utf-8") == text, f"{name} differs; UPDATE_GOLDEN=1 to accept"


def test_text_golden():
    check_golden("plan.txt", render_text(fixed_plan(), color=False))


def test_json_golden_and_schema():
    text = render_json(fixed_plan())
    check_golden("plan.json", text)
    jsonschema.Draft202012Validator(schemas.load("plan")).validate(json.loads(text))


def test_markdown_golden():
    check_golden("plan.md", render_markdown(fixed_plan()))


def test_summary_counts_records_and_calls():
    s = summarize(fixed_plan())
    # add: group visitors, alice (new), alice (copy), a face each for bob, carol and frank;
    # change: bob, carol, erin; destroy: bob -1, carol -2, frank -1, dave, group old_visitors
    assert (s.add, s.change, s.destroy) == (6, 3, 6)
    assert s.calls == len(fixed_plan().operations)
    assert s.line().endswith(f"{s.calls} API calls, about 2 s at 10 QPS.")


def test_colour_only_when_asked():
    p = fixed_plan()
    assert "\033[" not in render_text(p, color=False)
    coloured = render_text(p, color=True)
    assert "\033[32m+\033[0m" in coloured and "\033[31m-\033[0m" in coloured


def test_empty_plan_says_no_changes():
    p = Plan(operations=(), target="local:x", created_at="t")
    assert NO_CHANGES in render_text(p, color=False)
    assert "Plan:" not in render_text(p, color=False)
    assert NO_CHANGES in render_markdown(p) and "<details>" not in render_markdown(p)


def test_unsafe_and_forced_warnings():
    p = fixed_plan()
    assert p.safety.unsafe
    assert "apply refuses it unless --force" in render_text(p)
    forced = Plan(p.operations, p.target, safety=Safety(reasons=("too many",), forced=True))
    assert "--force given" in render_text(forced) and "(forced)" in render_markdown(forced)


def _huge_plan(n: int) -> Plan:
    ops = tuple(Operation(OpKind.ADD_FACE, f"g{i % 7}", f"user{i:06d}",
                          face=FaceSource(img("x").kind, f"photos/person_{i:06d}.jpg"), reason="new user")
                for i in range(n))
    return Plan(ops, "baidu", qps=10)


def test_markdown_is_cut_for_huge_plans_with_counts_of_what_is_left_out():
    md = render_markdown(_huge_plan(20_000))
    assert len(md) < MARKDOWN_MAX_CHARS
    block = md.split("```diff\n", 1)[1].split("\n```", 1)[0].splitlines()
    assert len(block) == 200
    assert "operations) not shown" in md and "| 20000 | 0 | 0 | 20000 | about 34 min at 10 QPS |" in md


def test_markdown_respects_the_character_budget():
    md = render_markdown(_huge_plan(5_000), max_lines=10_000, max_chars=8_000)
    assert len(md) < 8_000 and "not shown" in md


def test_markdown_fence_survives_backticks_in_user_info():
    p = plan(Desired((DesiredGroup("g", (user("u", "a", info="```evil```"),)),)), live({"g": {}}))
    md = render_markdown(p)
    assert "````diff" in md


@pytest.mark.parametrize("old,new,expected", [
    ("a", "b", ['user_info: "a" → "b"']),
    ('{"name": "Bob", "age": 3}', '{"name": "Robert", "age": 3, "desk": 4}',
     ['user_info.desk: added 4', 'user_info.name: "Bob" → "Robert"']),
    (None, '{"a": 1}', ['user_info: (unknown) → {"a": 1}']),
])
def test_user_info_changes_read_field_by_field(old, new, expected):
    assert user_info_lines(old, new) == expected
