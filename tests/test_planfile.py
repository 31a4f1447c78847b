"""Plan files: exact round trip, and refusal of anything edited, broken or foreign."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from hypothesis import given, settings

from facesync.errors import FacesyncError, PlanStaleError
from facesync.plan.planfile import PlanFileError, checksum, dump_plan, load_plan, write_plan
from facesync.plan.planner import make_plan
from tests.test_planner_properties import live_of, scenarios
from tests.test_render import fixed_plan


def portable(p):
    """The plan as a file holds it: no absolute path (apply finds the files again under its checkout)."""
    return replace(p, operations=tuple(replace(op, face=replace(op.face, path=None)) if op.face else op
                                       for op in p.operations))


def test_round_trip_from_text_and_from_a_file(tmp_path):
    p = fixed_plan()
    assert load_plan(dump_plan(p)) == portable(p)
    assert dump_plan(load_plan(dump_plan(p))) == dump_plan(p)
    path = tmp_path / "plan.json"
    write_plan(p, path)
    assert load_plan(path) == portable(p) and load_plan(str(path)) == portable(p)


def test_no_absolute_path_is_saved_and_every_file_upload_is_pinned():
    text = dump_plan(fixed_plan())
    assert "/m/" not in text
    uploads = [op["face"] for op in json.loads(text)["operations"] if op["face"] and op["face"]["kind"] == "file"]
    assert uploads and all(len(face["sha256"]) == 64 for face in uploads)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_round_trip_of_random_plans(scenario):
    state, desired, _ = scenario
    p = make_plan(desired, live_of(state, desired), created_at="t", qps=7.5, force=True)
    assert load_plan(dump_plan(p)) == portable(p)


def _document() -> dict:
    return json.loads(dump_plan(fixed_plan()))


@pytest.mark.parametrize("edit", [
    lambda d: d["operations"][1].update(user_id="mallory"),
    lambda d: d["operations"].pop(),
    lambda d: d["safety"].update(reasons=[], unsafe=False),
    lambda d: d.update(target="baidu"),
])
def test_any_edit_breaks_the_checksum(edit):
    document = _document()
    edit(document)
    with pytest.raises(PlanStaleError, match="checksum does not match"):
        load_plan(json.dumps(document))


def test_checksum_covers_everything_but_itself():
    document = _document()
    assert document["checksum"] == checksum(document)
    assert document["checksum"].startswith("sha256:") and len(document["checksum"]) == 71


@pytest.mark.parametrize("text,message", [
    ("{not json", "is not JSON"),
    ('{"hello": 1}', "not a facesync plan"),
    ('{"format_version": 3}', "plan format 3"),
    ('{"format_version": 1}', "format 1 saved absolute image paths"),
])
def test_foreign_text_is_refused_clearly(text, message):
    with pytest.raises(PlanFileError, match=message):
        load_plan(text)


def test_schema_violation_names_the_place():
    document = _document()
    document["operations"][0]["kind"] = "drop_table"
    document["checksum"] = checksum(document)
    with pytest.raises(PlanFileError, match="operations/0/kind"):
        load_plan(json.dumps(document))


def test_dependencies_must_point_backwards():
    document = _document()
    document["operations"][1]["after"] = [5]
    document["checksum"] = checksum(document)
    with pytest.raises(PlanFileError, match="out of order"):
        load_plan(json.dumps(document))


def test_missing_file_is_a_facesync_error(tmp_path):
    with pytest.raises(FacesyncError, match="cannot read plan file"):
        load_plan(tmp_path / "nope.json")


def test_large_plans_check_the_first_operations_by_schema_and_the_rest_by_rebuilding(monkeypatch):
    from facesync.plan import planfile

    monkeypatch.setattr(planfile, "SCHEMA_CHECKED_OPERATIONS", 2)
    assert load_plan(dump_plan(fixed_plan())) == portable(fixed_plan())
    document = _document()
    document["operations"][5]["kind"] = "drop_table"
    document["checksum"] = checksum(document)
    with pytest.raises(PlanFileError, match="not a valid facesync plan"):
        load_plan(json.dumps(document))


def test_protected_groups_survive_the_plan_file_and_stop_apply():
    from facesync.errors import PlanRefusedError
    from facesync.plan.ops import Operation, OpKind, Plan

    plan = Plan(operations=(Operation(OpKind.DELETE_GROUP, "vip"),), target="local:/x",
                created_at="2026-01-01T00:00:00Z", protected_groups=("vip",))
    reloaded = load_plan(dump_plan(plan))
    assert reloaded.protected_groups == ("vip",)
    refusal = reloaded.refusal()
    assert isinstance(refusal, PlanRefusedError) and "vip" in str(refusal)
