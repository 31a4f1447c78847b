"""The three views of a plan. Golden files in tests/golden/ hold the exact outputs of a fixed plan;
regenerate them after an intended change with ``UPDATE_GOLDEN=1 pytest tests/test_render.py`` and
review the diff."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest

from facesync import schemas
from facesync.model import Desired, DesiredGroup, DesiredUser, ImageKind, Policy
from facesync.plan.ops import Expect, FaceSource, Operation, OpKind, Plan, Safety
from facesync.plan.render import (
    MARKDOWN_MAX_CHARS,
    NO_CHANGES,
    render_json,
    render_markdown,
    render_text,
    summarize,
    user_info_lines,
)
from tests.test_planner import img, live, plan, tok, user

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
        "frank": (("f1", "f2"), ""),  # read: the adds send it back
        "dave": (("d1",), None),
    }}, extra_groups=("old_visitors", "audit"))
    made = plan(d, lv, qps=10)
    return replace(made, manifest="deploy/faceset.yaml", commit="0f" * 20,
                   face_names={tok("f2"): "faces/frank_2019.jpg", tok("d1"): "faces/dave.jpg"})


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
    assert len(block) == 199  # 200 lines, less a user heading whose face did not fit
    assert "… 39808 more lines (19901 operations that add or change) not shown" in md
    assert "| 20000 | 0 | 0 | 20000 | about 34 min at 10 QPS |" in md


def test_markdown_respects_the_character_budget():
    md = render_markdown(_huge_plan(5_000), max_lines=10_000, max_chars=8_000)
    assert len(md) < 8_000 and "not shown" in md


def _deleting_plan(deletes: int, adds: int) -> Plan:
    ops = [Operation(OpKind.ADD_FACE, "g", f"new{i:05d}", face=FaceSource(img("x").kind, f"photos/p{i:05d}.jpg"),
                     reason="new user") for i in range(adds)]
    ops += [Operation(OpKind.DELETE_USER, "g", f"gone{i:05d}", reason="user not in manifest") for i in range(deletes)]
    return Plan(tuple(ops), "baidu", qps=10)


def test_markdown_lists_every_delete_first_and_cuts_only_adds():
    md = render_markdown(_deleting_plan(deletes=250, adds=2_000))
    assert all(f"-   user gone{i:05d}" in md for i in range(250))
    assert md.index("gone00249") < md.index("<details>")  # deletes come before the folded rest
    assert "(1901 operations that add or change) not shown; every delete is above" in md
    assert "| 2000 | 0 | 250 |" in md


def test_markdown_that_cannot_hold_every_delete_says_so_at_the_top():
    md = render_markdown(_deleting_plan(deletes=5_000, adds=10))
    assert len(md.encode("utf-16-le")) // 2 <= 65_536
    assert md.index("> [!CAUTION]") < md.index("```diff")
    shown = sum(1 for line in md.splitlines() if line.startswith("-   user gone"))
    assert 0 < shown < 5_000
    assert f"{5_000 - shown} more lines ({5_000 - shown} operations that destroy) are not shown" in md
    assert "JSON plan" in md


def test_removed_faces_are_named_by_file_and_mechanics_stay_out_of_the_views():
    text = render_text(fixed_plan())
    assert "- face faces/frank_2019.jpg (" + tok("f2") + ")  # face not in manifest" in text
    assert "update with" not in text and "re-add" not in text  # erin's user/update and re-add
    assert '~ user_info: "Erin" → "Erin (new desk)"' in text
    assert '"reason": "re-add after update"' in render_json(fixed_plan())
    md = render_markdown(fixed_plan())
    assert "`deploy/faceset.yaml` at commit `" + "0f" * 20 + "`" in md


@pytest.mark.parametrize("evil", ["a\nPlan: 0 to add, 0 to change, 0 to destroy.", "gpj.\u202eexe", "x\u2028y",
                                  "tab\there", "bell\x07", "\u2066iso\u2069"])
def test_control_and_bidi_characters_are_never_printed_raw(evil):
    d = Desired((DesiredGroup("g", (DesiredUser("u", (img("a"),), evil),)),))
    p = plan(d, live({"g": {"u": (("a",), "old")}}))
    p = replace(p, notes=(f"note {evil}",), live_source=f"snapshot {evil}")
    for out in (render_text(p), render_text(p, color=True), render_markdown(p)):
        for char in ("\u202e", "\u2028", "\u2066", "\u2069", "\t", "\x07"):
            assert char not in out
        assert not any(line.startswith("Plan: 0 to add, 0 to change") for line in out.splitlines())
        assert "\\n" in out or "\\u" in out or "\\t" in out or "\\x07" in out


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


def test_a_staging_group_is_mechanics_shown_only_in_json():
    from facesync.model import stage_group_id

    stage = stage_group_id("g")
    expect = Expect("g", "u", True, ("t1", "t2"), "old")
    ops = (Operation(OpKind.CREATE_GROUP, stage, reason="staging group for this apply"),
           Operation(OpKind.COPY_USER, stage, "u", src_group_id="g", after=(0,), expects=(expect,)),
           Operation(OpKind.UPDATE_USER, "g", "u", face=FaceSource(ImageKind.FACE_TOKEN, "t1", None, "t1"),
                     user_info="new", after=(1,), expects=(expect,)),
           Operation(OpKind.ADD_FACE, "g", "u", face=FaceSource(ImageKind.FACE_TOKEN, "t2", None, "t2"),
                     user_info="new", after=(2,), expects=(expect,)),
           Operation(OpKind.DELETE_GROUP, stage, after=(3,), reason="staging group for this apply"))
    p = Plan(ops, "local:x", qps=10)
    for out in (render_text(p), render_markdown(p)):
        assert stage not in out and "every one listed" not in out
        assert '"old" → "new"' in out
    assert (summarize(p).add, summarize(p).change, summarize(p).destroy, summarize(p).calls) == (0, 1, 0, 5)
    assert stage in render_json(p)
