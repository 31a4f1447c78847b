"""The executor against the real local library: order, idempotence, failures, safety, verification."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from facesync import apply
from facesync.api.protocol import Image
from facesync.apply.order import WRITES
from facesync.cache import TokenCache
from facesync.errors import PlanRefusedError
from facesync.images import local_face_token
from facesync.model import (
    LOCK_GROUP_PREFIX,
    Desired,
    DesiredGroup,
    DesiredImage,
    DesiredUser,
    ImageKind,
    Policy,
)
from facesync.plan.ops import Expect, FaceSource, Operation, OpKind, Plan
from tests.support.cli import environment, run_facesync
from tests.support.images import png

# ---- helpers shared by the apply tests --------------------------------------------------------------

pytestmark = pytest.mark.both_unknowns


def image_file(folder, seed: int) -> DesiredImage:
    path = folder / f"face{seed}.png"
    if not path.exists():
        path.write_bytes(png(seed))
    return DesiredImage(ImageKind.FILE, f"face{seed}.png", path=str(path))


def token_of(seed: int) -> str:
    return local_face_token(png(seed))


_TOKENS: dict[str, TokenCache] = {}


def tokens_of(library) -> TokenCache:
    """The token cache of ``library`` for this test: it learns from every add, as facesync's own does.

    A service whose detect answers other tokens than user/add stored (harsh unknowns) can only be planned
    with the tokens its adds answered; so tests seed and apply through this cache."""
    return _TOKENS.setdefault(getattr(library, "path", None) or library.identity, TokenCache.in_memory())


def plan_for(library, desired: Desired, cache: TokenCache | None = None, *, force: bool = True) -> Plan:
    from facesync.session import Session

    with Session(library, cache=cache or tokens_of(library), concurrency=4, progress=False) as session:
        return session.plan(desired, force=force)


def execute(plan: Plan, library, **options):
    """``apply.execute`` recording the tokens its adds answer in the library's test cache."""
    options.setdefault("cache", tokens_of(library))
    return apply.execute(plan, library, **options)


def snapshot(library, group_ids) -> dict:
    """{group: {user: (sorted face tokens, user_info)}} of the named groups that exist."""
    present = set(library.group_getlist(0, 1000).ids)
    state = {}
    for group_id in group_ids:
        if group_id not in present:
            continue
        users = {}
        for user_id in library.group_getusers(group_id, 0, 1000).ids:
            faces = tuple(sorted(f.face_token for f in library.face_getlist(group_id, user_id).faces))
            info = library.user_get(group_id, user_id).memberships[0].user_info
            users[user_id] = (faces, info)
        state[group_id] = users
    return state


def desired_state(desired: Desired) -> dict:
    state = {}
    for group in desired.groups:
        state[group.group_id] = {
            user.user_id: (tuple(sorted({local_face_token(Path(i.path).read_bytes()) if i.path else i.face_token
                                          for i in user.images})), user.user_info or "")
            for user in group.users if user.images
        }
    return state


def seed_library(library, layout: dict) -> None:
    """layout: {group: {user: ([seeds], user_info)}}."""
    for group_id, users in layout.items():
        library.group_add(group_id)
        for user_id, (seeds, info) in users.items():
            for seed in seeds:
                added = library.user_add(group_id, user_id, Image.from_bytes(png(seed)), user_info=info)
                tokens_of(library).record(hashlib.sha256(png(seed)).hexdigest(), added.face_token)


# ---- building, converging, second plan empty ----------------------------------------------------------


def test_builds_a_new_library_verifies_it_and_records_tokens(library, tmp_path):
    desired = Desired(groups=(
        DesiredGroup("staff", (DesiredUser("alice", (image_file(tmp_path, 1), image_file(tmp_path, 2)), "A"),
                               DesiredUser("bob", (image_file(tmp_path, 3),), "B"))),
        DesiredGroup("visitors", (DesiredUser("alice", (image_file(tmp_path, 1), image_file(tmp_path, 2)), "A"),)),
    ))
    cache = TokenCache.in_memory()
    plan = plan_for(library, desired, cache)
    assert any(op.kind is OpKind.COPY_USER for op in plan.operations)
    seen = []
    result = execute(plan, library, concurrency=4, cache=cache, on_result=seen.append)
    assert result.ok, (result.failures, result.problems)
    assert result.verified and result.problems == ()
    assert result.count(apply.DONE) == len(plan.operations) == len(seen)
    assert snapshot(library, ["staff", "visitors"]) == desired_state(desired)
    assert plan_for(library, desired, cache).empty
    assert cache.token(hashlib.sha256(png(3)).hexdigest()) == token_of(3)


def test_replaces_faces_make_before_break_and_prunes(library, tmp_path):
    seed_library(library, {"g": {"keep": ([1, 2], "k"), "gone": ([9], ""), "swap": ([4], "s")}})
    desired = Desired(groups=(DesiredGroup("g", (
        DesiredUser("keep", (image_file(tmp_path, 1), image_file(tmp_path, 3)), "k2"),
        DesiredUser("swap", (image_file(tmp_path, 5), image_file(tmp_path, 6)), "s"),
    )),))
    plan = plan_for(library, desired)
    deps = apply.dependencies(plan)
    for i, op in enumerate(plan.operations):
        if op.kind is OpKind.DELETE_FACE:
            same_user_writes = {j for j, other in enumerate(plan.operations[:i])
                                if other.user_id == op.user_id and other.kind in WRITES}
            assert same_user_writes <= deps[i]
    result = execute(plan, library, concurrency=8)
    assert result.ok, (result.failures, result.problems)
    assert snapshot(library, ["g"]) == desired_state(desired)
    assert plan_for(library, desired).empty


# ---- ordering rules (pure) ---------------------------------------------------------------------------


def _op(kind, group="g", user=None, **fields):
    return Operation(kind, group, user, **fields)


def test_dependencies_add_the_safety_rules_and_only_point_backwards():
    face = FaceSource(ImageKind.FACE_TOKEN, "t" * 32, face_token="a" * 32)
    ops = (
        _op(OpKind.CREATE_GROUP, "h"),  # 0
        _op(OpKind.ADD_FACE, "h", "u", face=face),  # 1
        _op(OpKind.ADD_FACE, "h", "u", face=replace(face, face_token="b" * 32)),  # 2
        _op(OpKind.COPY_USER, "g", "u", src_group_id="h"),  # 3
        _op(OpKind.ADD_FACE, "g", "v", face=replace(face, face_token="c" * 32)),  # 4
        _op(OpKind.DELETE_FACE, "h", "u", face_token="z" * 32),  # 5
        _op(OpKind.DELETE_FACE, "x", "w", face_token="c" * 32),  # 6: removes a token op 4 re-uses
        _op(OpKind.DELETE_USER, "g", "old"),  # 7
        _op(OpKind.DELETE_GROUP, "x"),  # 8
    )
    deps = apply.dependencies(Plan(ops, target="t"))
    assert deps[0] == frozenset()
    assert deps[1] == {0}
    assert deps[2] == {0, 1}  # the first write of a user goes alone
    assert deps[3] == {0, 1, 2}  # a copy waits for its source user
    assert deps[4] == frozenset()  # independent: starts at once
    assert deps[5] >= {1, 2, 3}  # make before break, and the copy reads the source first
    assert deps[6] == {4}
    assert deps[7] == {1, 2, 4}  # its faces are not known: any may be what an add by token needs alive
    assert deps[8] == {1, 2, 4, 6}
    assert all(j < i for i, need in enumerate(deps) for j in need)


# ---- idempotence: a re-run after a crash --------------------------------------------------------------


def test_rerunning_a_finished_plan_counts_everything_as_already_done(library, tmp_path):
    seed_library(library, {"g": {"u": ([1, 2], "x"), "old": ([7], "")}, "dead": {"z": ([8], "")}})
    desired = Desired(
        groups=(DesiredGroup("g", (DesiredUser("u", (image_file(tmp_path, 1), image_file(tmp_path, 3)), "x"),)),
                DesiredGroup("n", (DesiredUser("new", (image_file(tmp_path, 4),), "N"),))),
        policy=Policy(delete_unlisted_groups=True),
    )
    plan = plan_for(library, desired)
    kinds = {op.kind for op in plan.operations}
    assert {OpKind.CREATE_GROUP, OpKind.ADD_FACE, OpKind.DELETE_FACE, OpKind.DELETE_USER,
            OpKind.DELETE_GROUP} <= kinds
    first = execute(plan, library)
    assert first.ok, (first.failures, first.problems)
    again = execute(plan, library)  # as after kill -9 right before the report was written
    assert again.ok, (again.failures, again.problems)
    assert again.count(apply.ALREADY) == len(plan.operations)
    assert {r.error_code for r in again.results} == {None}
    assert snapshot(library, ["g", "n", "dead"]) == desired_state(desired)


def test_already_present_face_with_other_user_info_fails_honestly_and_loses_nothing(library, tmp_path):
    seed_library(library, {"g": {"u": ([1, 2], "old info")}})
    op = _op(OpKind.ADD_FACE, "g", "u", face=FaceSource(ImageKind.FILE, "face1.png",
                                                        path=image_file(tmp_path, 1).path),
             user_info="new info")
    result = execute(Plan((op,), target=library.identity), library)
    # setting user_info alone takes a user/update, which drops the other faces: that is the planner's job
    assert result.results[0].outcome == apply.FAILED
    assert "run apply again" in result.results[0].error_msg
    assert snapshot(library, ["g"]) == {"g": {"u": (tuple(sorted([token_of(1), token_of(2)])), "old info")}}


def test_copy_meeting_an_existing_user_adds_what_the_copy_would_have(library):
    seed_library(library, {"src": {"u": ([1, 2], "i")}, "dst": {"u": ([1], "i")}})
    op = _op(OpKind.COPY_USER, "dst", "u", src_group_id="src")
    result = execute(Plan((op,), target=library.identity), library)
    assert result.ok, (result.failures, result.problems)
    assert snapshot(library, ["dst"])["dst"]["u"][0] == tuple(sorted([token_of(1), token_of(2)]))


# ---- permanent failures --------------------------------------------------------------------------------


def test_a_rejected_image_fails_its_op_skips_dependents_and_keeps_old_faces(tmp_path):
    from facesync.local.store import LocalLibrary

    rejected = token_of(50)
    library = LocalLibrary(str(tmp_path / "lib.db"),
                           image_check=lambda token, quality, liveness: 223120 if token == rejected else None)
    try:
        seed_library(library, {"g": {"u": ([1, 2], "x"), "other": ([2], ""), "w": ([6], "")}})
        desired = Desired(groups=(
            DesiredGroup("g", (DesiredUser("u", (image_file(tmp_path, 1), image_file(tmp_path, 50)), "x"),
                               DesiredUser("w", (image_file(tmp_path, 50),), ""),
                               DesiredUser("other", (image_file(tmp_path, 3),), ""),
                               DesiredUser("fresh", (image_file(tmp_path, 50), image_file(tmp_path, 4)), "f"))),
            DesiredGroup("copy", (DesiredUser("fresh", (image_file(tmp_path, 50), image_file(tmp_path, 4)), "f"),)),
        ))
        plan = plan_for(library, desired)
        result = execute(plan, library, concurrency=4)
        assert not result.ok
        failed = result.failures
        assert failed and all(r.error_code == 223120 for r in failed)
        by_user = {}
        for r in result.results:
            by_user.setdefault((r.operation.group_id, r.operation.user_id), set()).add(r.outcome)
        assert apply.SKIPPED in by_user[("g", "u")]  # the delete of the old face waited and was skipped
        assert by_user[("g", "other")] == {apply.DONE}  # independent work finished
        assert apply.SKIPPED in by_user.get(("copy", "fresh"), {apply.SKIPPED})
        state = snapshot(library, ["g"])
        assert state["g"]["u"][0] == tuple(sorted([token_of(1), token_of(2)]))  # keeps its old faces
        assert state["g"]["w"][0] == (token_of(6),)  # a failed user/update changes nothing
        assert state["g"]["other"][0] == (token_of(3),)
        assert result.problems == ()  # failed users are reported as failures, not as mismatches
    finally:
        library.close()


def test_an_unreadable_file_fails_only_its_operation(library, tmp_path):
    ops = (_op(OpKind.CREATE_GROUP, "g"),
           _op(OpKind.ADD_FACE, "g", "a", face=FaceSource(ImageKind.FILE, "missing.png",
                                                          path=str(tmp_path / "missing.png"))),
           _op(OpKind.ADD_FACE, "g", "b", face=FaceSource(ImageKind.FILE, "face5.png",
                                                          path=image_file(tmp_path, 5).path)))
    result = execute(Plan(ops, target=library.identity), library)
    assert [r.outcome for r in result.results] == [apply.DONE, apply.FAILED, apply.DONE]
    assert "missing.png" in result.results[1].error_msg


# ---- safety ------------------------------------------------------------------------------------------


def test_protected_and_lock_groups_are_refused_before_any_call(library):
    seed_library(library, {"vip": {"u": ([1], "")}})
    plan = Plan((_op(OpKind.DELETE_GROUP, "vip"),), target=library.identity, protected_groups=("vip",))
    with pytest.raises(PlanRefusedError, match="protected group vip"):
        execute(plan, library)
    with pytest.raises(PlanRefusedError, match="protected group vip"):
        execute(replace(plan, protected_groups=()), library, protected_groups={"vip"})
    with pytest.raises(PlanRefusedError, match="lock group"):
        execute(Plan((_op(OpKind.DELETE_GROUP, LOCK_GROUP_PREFIX + "_hr0_abc_1_host"),), target="t"), library)
    assert "vip" in library.group_getlist().ids


# ---- saved plans: staleness ----------------------------------------------------------------------------


def test_stale_facts_name_what_moved(library, tmp_path):
    seed_library(library, {"g": {"u": ([1], "a")}})
    desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", (image_file(tmp_path, 2),), "b"),
                                                 DesiredUser("v", (image_file(tmp_path, 3),), "c"))),))
    plan = plan_for(library, desired)
    assert apply.stale_facts(plan, library) == ()
    library.user_add("g", "u", Image.from_bytes(png(9)))
    library.user_add("g", "v", Image.from_bytes(png(8)))
    moved = apply.stale_facts(plan, library)
    assert any("g/u" in line and token_of(9) in line for line in moved), moved
    assert any("g/v" in line and "not to exist" in line for line in moved), moved


def test_verification_reports_what_differs(library):
    seed_library(library, {"g": {"u": ([1], "")}})
    op = _op(OpKind.ADD_FACE, "g", "u", face=FaceSource(ImageKind.FACE_TOKEN, token_of(1), face_token=token_of(1)),
             expects=(Expect("g", "u", True, (token_of(1),)),))
    done = apply.OpResult(0, op, apply.DONE, face_token=token_of(1))
    plan = Plan((op,), target="t")
    assert apply.verify_results(plan, library, [done], mode="full") == ()
    library.user_add("g", "u", Image.from_bytes(png(2)))
    problems = apply.verify_results(plan, library, [done], mode="full")
    assert problems == (f"user g/u: face {token_of(2)} present, the plan did not want it",)


def test_quick_verification_reads_back_only_what_the_answers_leave_in_doubt(library):
    seed_library(library, {"g": {"u": ([1], "")}})
    op = _op(OpKind.ADD_FACE, "g", "u", face=FaceSource(ImageKind.FACE_TOKEN, token_of(1), face_token=token_of(1)),
             expects=(Expect("g", "u", True, (token_of(1),)),))
    plan = Plan((op,), target="t")
    library.user_add("g", "u", Image.from_bytes(png(2)))  # someone else's change, unseen by the plan
    clean = apply.OpResult(0, op, apply.DONE, face_token=token_of(1), attempts=1)
    assert apply.verify_results(plan, library, [clean], mode="quick") == ()  # the answer is proof
    for doubtful in (apply.OpResult(0, op, apply.ALREADY, face_token=token_of(1), attempts=1),
                     apply.OpResult(0, op, apply.DONE, face_token=token_of(1), attempts=2)):
        assert apply.verify_results(plan, library, [doubtful], mode="quick") == (
            f"user g/u: face {token_of(2)} present, the plan did not want it",)


# ---- the report ----------------------------------------------------------------------------------------


def test_report_lists_every_operation_with_outcome_and_totals(library, tmp_path):
    desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", (image_file(tmp_path, 1),), "x"),)),))
    plan = plan_for(library, desired)
    result = execute(plan, library)
    report = apply.report_dict(result, target=library.identity, plan=plan)
    json.dumps(report)  # serialisable
    assert report["totals"]["done"] == len(plan.operations) == len(report["operations"])
    entry = report["operations"][-1]
    assert entry["kind"] == "add_face" and entry["outcome"] == "done" and entry["attempts"] == 1
    assert isinstance(entry["log_id"], int) and entry["group_id"] == "g" and entry["user_id"] == "u"
    assert report["verification"] == {"done": True, "ok": True, "problems": [], "not_verified": [],
                                      "not_done_because": None}


# ---- the command line (local target, real subprocess) ---------------------------------------------------


def _cli(tmp_path, *args: str):
    return run_facesync(*args, env=environment(without=("FACESYNC_TARGET",),
                                               FACESYNC_CACHE_DIR=str(tmp_path / "cache")))


def _manifest(tmp_path, users: dict, *, extra: str = "") -> str:
    lines = ["version: 1", f"target: local:{tmp_path / 'lib.db'}", extra, "groups:", "  g:", "    users:"]
    for user_id, seeds in users.items():
        for seed in seeds:
            image_file(tmp_path, seed)
        lines += [f"      {user_id}:", f"        images: [{', '.join(f'face{s}.png' for s in seeds)}]"]
    path = tmp_path / "faceset.yaml"
    path.write_text("\n".join(line for line in lines if line) + "\n")
    return str(path)


def test_cli_refuses_without_a_terminal_or_yes_and_changes_nothing(tmp_path):
    manifest = _manifest(tmp_path, {"u": [1]})
    refused = _cli(tmp_path, "apply", manifest)
    assert refused.returncode == 1
    assert "--yes" in refused.stderr and "Traceback" not in refused.stderr
    assert "+ group g" in refused.stdout  # the plan was shown first
    from facesync.local.store import LocalLibrary

    with LocalLibrary(str(tmp_path / "lib.db")) as lib:
        assert lib.group_getlist().ids == ()


def test_cli_asks_on_a_terminal_and_only_yes_applies(tmp_path):
    manifest = _manifest(tmp_path, {"u": [1]})
    env = {**os.environ, "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    for answer, code in (("no\n", 1), ("yes\n", 0)):
        master, slave = os.openpty()
        try:
            os.write(master, answer.encode())
            done = run_facesync("apply", manifest, env=env, stdin=slave)
        finally:
            os.close(slave)
            os.close(master)
        assert done.returncode == code, done.stdout + done.stderr
        assert "Only 'yes' will be accepted" in done.stdout
    assert "No changes" in _cli(tmp_path, "apply", manifest).stdout


def test_cli_saved_plan_applies_refuses_when_moved_or_tampered(tmp_path):
    from facesync.local.store import LocalLibrary

    manifest = _manifest(tmp_path, {"u": [1, 2], "v": [3]})
    plan_path = str(tmp_path / "plan.json")
    assert _cli(tmp_path, "plan", manifest, "--out", plan_path).returncode == 0
    done = _cli(tmp_path, "apply", plan_path, "--report", str(tmp_path / "report.json"))
    assert done.returncode == 0, done.stderr  # a reviewed plan needs no prompt
    assert json.loads((tmp_path / "report.json").read_text())["totals"]["done"] == 4

    _manifest(tmp_path, {"u": [1, 4], "v": [3]})
    assert _cli(tmp_path, "plan", manifest, "--out", plan_path).returncode == 0
    with LocalLibrary(str(tmp_path / "lib.db")) as lib:
        lib.user_add("g", "u", Image.from_bytes(png(9)))
    moved = _cli(tmp_path, "apply", plan_path)
    assert moved.returncode == 1 and "changed since this plan" in moved.stderr
    assert "g/u" in moved.stderr and token_of(9) in moved.stderr

    assert _cli(tmp_path, "plan", manifest, "--out", plan_path).returncode == 0
    tampered = tmp_path / "tampered.json"
    tampered.write_text(Path(plan_path).read_text().replace('"u"', '"w"'))
    refused = _cli(tmp_path, "apply", str(tampered))
    assert refused.returncode == 1 and "checksum" in refused.stderr
    narrowed = _cli(tmp_path, "apply", plan_path, "--group", "g")
    assert narrowed.returncode == 1 and "cannot narrow" in narrowed.stderr
    other = _cli(tmp_path, "apply", plan_path, "--target", f"local:{tmp_path / 'other.db'}")
    assert other.returncode == 1 and "made for" in other.stderr


def test_cli_unsafe_plan_exits_3_unless_forced(tmp_path):
    manifest = _manifest(tmp_path, {f"u{i}": [i] for i in range(12)})
    assert _cli(tmp_path, "apply", manifest, "--yes").returncode == 0
    _manifest(tmp_path, {"u0": [0]})
    unsafe = _cli(tmp_path, "apply", manifest, "--yes")
    assert unsafe.returncode == 3, unsafe.stderr
    assert "--force" in unsafe.stderr
    forced = _cli(tmp_path, "apply", manifest, "--yes", "--force")
    assert forced.returncode == 0, forced.stderr


# ---- where Baidu is silent: correct under either answer -----------------------------------------------


def test_adds_keep_a_user_info_the_manifest_does_not_manage(library, tmp_path):
    seed_library(library, {"g": {"u": ([1], "kept as it is")}})
    desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", (image_file(tmp_path, 1), image_file(tmp_path, 2))),)),))
    plan = plan_for(library, desired)
    assert [op.user_info for op in plan.operations] == ["kept as it is"]  # sent back: an add may clear it
    result = execute(plan, library)
    assert result.ok, (result.failures, result.problems)
    assert snapshot(library, ["g"]) == {"g": {"u": (tuple(sorted([token_of(1), token_of(2)])), "kept as it is")}}
    assert plan_for(library, desired).empty


def face_token_image(seed: int) -> DesiredImage:
    return DesiredImage(ImageKind.FACE_TOKEN, token_of(seed), face_token=token_of(seed))


@pytest.mark.parametrize("by_token", [False, True], ids=["files", "tokens"])
def test_a_user_info_change_keeps_every_face(library, tmp_path, by_token):
    seed_library(library, {"g": {"u": ([1, 2, 3], "old")}})
    images = (image_file(tmp_path, 1), *((face_token_image(2), face_token_image(3)) if by_token
                                         else (image_file(tmp_path, 2), image_file(tmp_path, 3))))
    desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", images, "new"),)),))
    plan = plan_for(library, desired)
    assert OpKind.UPDATE_USER in {op.kind for op in plan.operations}
    assert (OpKind.COPY_USER in {op.kind for op in plan.operations}) == by_token  # a staging copy for tokens
    result = execute(plan, library, verify="full")
    assert result.ok, (result.failures, result.problems)
    assert snapshot(library, ["g"]) == {"g": {"u": (tuple(sorted(token_of(s) for s in (1, 2, 3))), "new")}}
    assert set(library.group_getlist(0, 1000).ids) == {"g"}  # the staging group is gone
    assert plan_for(library, desired).empty


def test_detect_answering_other_tokens_than_user_add_stops_before_any_delete(library, tmp_path, unknowns):
    seed_library(library, {"g": {"u": ([1], "i")}})  # face 1 added by facesync: its token is cached
    library.user_add("g", "u", Image.from_bytes(png(2)), user_info="i")  # added by someone else: not cached
    desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", (image_file(tmp_path, 1), image_file(tmp_path, 2)),
                                                             "i"),)),))
    plan = plan_for(library, desired)
    if unknowns == "lenient":
        assert plan.empty
        return
    # detect's token for face 2 differs from the stored one: the plan cannot tell the photo is there
    assert [op.kind for op in plan.operations] == [OpKind.ADD_FACE, OpKind.DELETE_FACE]
    result = execute(plan, library)
    assert result.stopped and "facesync doctor" in result.stopped
    assert "another face_token than detect" in result.stopped
    assert result.results[1].outcome == apply.SKIPPED
    before = {"g": {"u": (tuple(sorted([token_of(1), token_of(2)])), "i")}}
    assert snapshot(library, ["g"]) == before  # nothing deleted


def test_recreating_a_group_waits_for_its_background_delete(tmp_path, unknowns):
    from facesync.local.store import LocalLibrary

    now = [1_000_000.0]
    library = LocalLibrary(str(tmp_path / "bg.db"), background_group_delete=True, clock=lambda: now[0],
                           unknowns=unknowns)
    try:
        library.group_add("big")
        for i in range(501):  # over 500 faces: deleted in the background, at about 20 faces/s
            library.user_add("big", f"u{i}", Image.from_bytes(png(1000 + i)))
        library.group_delete("big")
        desired = Desired(groups=(DesiredGroup("big", (DesiredUser("new", (image_file(tmp_path, 7),)),)),))
        plan = plan_for(library, desired)
        assert [op.kind for op in plan.operations] == [OpKind.CREATE_GROUP, OpKind.ADD_FACE]

        stuck = execute(plan, library, group_wait_s=0, sleep=lambda s: None)
        assert stuck.results[0].outcome == apply.FAILED
        assert "still being deleted in the background" in stuck.results[0].error_msg
        assert stuck.results[1].outcome == apply.SKIPPED

        waits = []
        result = execute(plan, library, sleep=lambda s: (waits.append(s), now.__setitem__(0, now[0] + s)))
        assert result.ok, (result.failures, result.problems)
        assert waits and sum(waits) >= 501 / 20 - 1  # it waited for the delete, then created the group
        assert snapshot(library, ["big"]) == {"big": {"new": ((token_of(7),), "")}}
    finally:
        library.close()


# ---- faces moving between users of a group: one apply, whether or not Baidu allows one face on two ----


def _ends_as(library, desired, expected) -> None:
    plan = plan_for(library, desired)
    result = execute(plan, library, verify="full")
    assert result.ok, (result.failures, result.problems, result.stopped)
    assert snapshot(library, ["g"]) == expected
    assert set(library.group_getlist(0, 1000).ids) == {"g"}  # no staging group left behind
    assert plan_for(library, desired).empty


def test_a_face_moving_to_another_user_of_the_group_is_added_once_its_old_user_lost_it(library, tmp_path):
    seed_library(library, {"g": {"alice": ([1, 2], "a"), "bob": ([3], "b")}})
    desired = Desired(groups=(DesiredGroup("g", (
        DesiredUser("alice", (image_file(tmp_path, 2),), "a"),
        DesiredUser("bob", (image_file(tmp_path, 3), image_file(tmp_path, 1)), "b"),
    )),))
    plan = plan_for(library, desired)
    keys = [op.key for op in plan.operations]
    leave = keys.index(f"delete_face:g:alice::{token_of(1)}")
    arrive = keys.index(f"add_face:g:bob::{token_of(1)}")
    assert leave < arrive and leave in apply.dependencies(plan)[arrive]
    assert plan.operations[arrive].reason == "moves from user alice"
    _ends_as(library, desired, {"g": {"alice": ((token_of(2),), "a"),
                                      "bob": (tuple(sorted([token_of(1), token_of(3)])), "b")}})


@pytest.mark.parametrize("by_token", [False, True], ids=["file", "token"])
def test_a_user_dropped_from_the_manifest_hands_its_face_to_another_user(library, tmp_path, by_token):
    seed_library(library, {"g": {"alice": ([1], "a"), "bob": ([3], "b")}})
    desired = Desired(groups=(DesiredGroup("g", (
        DesiredUser("alice", ()),  # named without images: removed, and its faces were read
        DesiredUser("bob", (image_file(tmp_path, 3), face_token_image(1) if by_token else image_file(tmp_path, 1)),
                    "b"),
    )),))
    _ends_as(library, desired, {"g": {"bob": (tuple(sorted([token_of(1), token_of(3)])), "b")}})


@pytest.mark.parametrize("by_token", [False, True], ids=["files", "tokens"])
def test_two_users_swapping_their_faces_converge_in_one_apply(library, tmp_path, by_token):
    seed_library(library, {"g": {"alice": ([1], "a"), "bob": ([2], "kept"), "carol": ([4, 5], "c")}})
    image = face_token_image if by_token else (lambda seed: image_file(tmp_path, seed))
    desired = Desired(groups=(DesiredGroup("g", (
        DesiredUser("alice", (image(2),), "a"),
        DesiredUser("bob", (image(1),)),  # user_info not managed: kept through the swap
        DesiredUser("carol", (image_file(tmp_path, 5), image(4)), "c2"),  # unrelated: an update with a re-add
    )),))
    plan = plan_for(library, desired)
    # faces known only by token stay alive in a staging copy while they are between two users
    assert any(op.kind is OpKind.COPY_USER for op in plan.operations) == by_token
    _ends_as(library, desired, {"g": {"alice": ((token_of(2),), "a"), "bob": ((token_of(1),), "kept"),
                                      "carol": (tuple(sorted([token_of(4), token_of(5)])), "c2")}})


def test_a_face_known_only_by_token_moves_through_a_staging_copy(library, tmp_path):
    seed_library(library, {"g": {"alice": ([1, 2], "a"), "bob": ([3], "b")}})
    desired = Desired(groups=(DesiredGroup("g", (
        DesiredUser("alice", (image_file(tmp_path, 2),), "a"),
        DesiredUser("bob", (image_file(tmp_path, 3), face_token_image(1)), "b"),
    )),))
    plan = plan_for(library, desired)
    kinds = [(op.kind, op.group_id) for op in plan.operations]
    assert (OpKind.COPY_USER, "_facesync_stage_g") in kinds and (OpKind.DELETE_GROUP, "_facesync_stage_g") in kinds
    _ends_as(library, desired, {"g": {"alice": ((token_of(2),), "a"),
                                      "bob": (tuple(sorted([token_of(1), token_of(3)])), "b")}})


def test_a_renamed_user_takes_its_photos_in_one_apply(library, tmp_path):
    """The new user_id is new everywhere, so its photos are not resolved and the old user's faces not read:
    no plan can see the move. Its adds wait for the removals of the group once Baidu refuses them."""
    seed_library(library, {"g": {"alice": ([1, 2], "a"), "bob": ([3], "b")}})
    desired = Desired(groups=(DesiredGroup("g", (
        DesiredUser("alicia", (image_file(tmp_path, 1), image_file(tmp_path, 2)), "a"),
        DesiredUser("bob", (image_file(tmp_path, 3),), "b"),
    )),))
    _ends_as(library, desired, {"g": {"alicia": (tuple(sorted([token_of(1), token_of(2)])), "a"),
                                      "bob": ((token_of(3),), "b")}})


@pytest.mark.parametrize("refresh", ["full", "incremental"])
def test_a_user_renamed_in_an_exported_manifest_takes_its_faces_by_token_in_one_apply(library, tmp_path, refresh):
    """Faces named only by face_token: a user only to be deleted is read in a group that names faces so,
    so the plan sees the move, and a staging copy keeps the tokens usable while the face changes user."""
    from facesync.session import Session

    seed_library(library, {"g": {"alice": ([1, 2], "a"), "bob": ([3], "b")}})
    state = str(tmp_path / "state.json")
    before = Desired(groups=(DesiredGroup("g", (
        DesiredUser("alice", (face_token_image(1), face_token_image(2)), "a"),
        DesiredUser("bob", (face_token_image(3),), "b"),
    )),))
    renamed = Desired(groups=(DesiredGroup("g", (
        DesiredUser("alicia", (face_token_image(1), face_token_image(2)), "a"),
        DesiredUser("bob", (face_token_image(3),), "b"),
    )),))
    with Session(library, cache=tokens_of(library), refresh=refresh, state=state, progress=False) as session:
        assert session.plan(before).empty  # the state learns alice's faces
        plan = session.plan(renamed, force=True)
        assert (OpKind.COPY_USER, "_facesync_stage_g") in [(op.kind, op.group_id) for op in plan.operations]
        result = session.apply(plan, force=True, verify="full")
        assert result.ok, (result.failures, result.problems, result.stopped)
        assert snapshot(library, ["g"]) == {"g": {"alicia": (tuple(sorted([token_of(1), token_of(2)])), "a"),
                                                  "bob": ((token_of(3),), "b")}}
        assert set(library.group_getlist(0, 1000).ids) == {"g"}  # no staging group left behind
        assert session.plan(renamed).empty


def test_photos_stored_under_tokens_detect_does_not_answer_are_uploaded_again_keeping_user_info(
        library, tmp_path, unknowns):
    library.group_add("g")
    for seed in (1, 2):  # added by someone else: the token cache knows neither
        library.user_add("g", "u", Image.from_bytes(png(seed)), user_info="kept")
    desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", (image_file(tmp_path, 1), image_file(tmp_path, 2))),)),))
    cache = TokenCache.in_memory()
    plan = plan_for(library, desired, cache)
    if unknowns == "lenient":  # detect answers the stored tokens
        assert plan.empty
        return
    # every photo matches no face: one update and one add re-upload them, sending the user_info back
    assert [(op.kind, op.user_info) for op in plan.operations] == [(OpKind.UPDATE_USER, "kept"),
                                                                   (OpKind.ADD_FACE, "kept")]
    result = execute(plan, library, cache=cache)
    assert result.ok, (result.failures, result.problems, result.stopped)
    assert snapshot(library, ["g"]) == {"g": {"u": (tuple(sorted([token_of(1), token_of(2)])), "kept")}}
    assert plan_for(library, desired, cache).empty  # the cache learned the stored tokens
