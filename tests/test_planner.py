"""The planner's choices, one rule at a time: which operations, in which order, waiting on what."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import pytest

from facesync.errors import ConfigError
from facesync.model import (
    LOCK_GROUP_PREFIX,
    Desired,
    DesiredGroup,
    DesiredImage,
    DesiredUser,
    ImageKind,
    Live,
    LiveGroup,
    LiveUser,
    Policy,
)
from facesync.plan.ops import Expect, OpKind
from facesync.plan.planner import make_plan, narrow


def tok(name: str) -> str:
    return hashlib.md5(name.encode()).hexdigest()


def img(name: str, resolved: bool = True) -> DesiredImage:
    return DesiredImage(ImageKind.FILE, f"{name}.jpg", f"/m/{name}.jpg",
                        hashlib.sha256(name.encode()).hexdigest(), tok(name) if resolved else None)


def user(uid: str, *names: str, info: str | None = None, resolved: bool = True) -> DesiredUser:
    return DesiredUser(uid, tuple(img(n, resolved) for n in names), info)


def desired(*groups: DesiredGroup, **policy) -> Desired:
    return Desired(tuple(groups), Policy(**policy), digest="sha256:d")


def live(groups: dict[str, dict[str, tuple]], extra_groups: tuple[str, ...] = (), read_info: bool = True) -> Live:
    """groups: {gid: {uid: (face names, user_info)}}; a None user_info reads as empty unless ``read_info``
    is off (then it was not read, as refresh leaves the user_info the manifest does not manage)."""
    return Live(
        group_ids=(*groups, *extra_groups),
        groups={gid: LiveGroup(gid, {uid: LiveUser(uid, tuple(tok(n) for n in names),
                                              "" if info is None and read_info else info)
                                     for uid, (names, info) in users.items()})
                for gid, users in groups.items()},
        identity="local:test.db",
    )


def plan(d: Desired, lv: Live, **kwargs):
    return make_plan(d, lv, created_at="2024-01-01T00:00:00Z", **kwargs)


def kinds(p) -> list[str]:
    return [op.kind.value for op in p.operations]


def test_new_group_and_new_user_are_one_create_and_one_add_per_face():
    p = plan(desired(DesiredGroup("staff", (user("alice", "a1", "a2", info="Alice", resolved=False),))),
             live({}))
    assert kinds(p) == ["create_group", "add_face", "add_face"]
    create, first, second = p.operations
    assert create.expects == (Expect("staff", None, False),)
    assert first.after == second.after == (0,)
    assert [op.face.source for op in (first, second)] == ["a1.jpg", "a2.jpg"]
    assert first.user_info == "Alice" and second.user_info == "Alice"
    assert first.expects == (Expect("staff", "alice", False),)
    assert p.calls == 3 and p.target == "local:test.db" and p.manifest_digest == "sha256:d"


def test_in_sync_library_gives_an_empty_plan():
    d = desired(DesiredGroup("staff", (user("alice", "a1", "a2", info="A"),)))
    p = plan(d, live({"staff": {"alice": (("a2", "a1"), "A")}}))
    assert p.empty and p.calls == 0 and not p.safety.unsafe


def test_same_user_in_two_new_groups_is_added_once_and_copied_once():
    alice = user("alice", "a1", "a2", "a3", info="A", resolved=False)
    p = plan(desired(DesiredGroup("g1", (alice,)), DesiredGroup("g2", (alice,))), live({}))
    assert kinds(p) == ["create_group", "create_group", "add_face", "add_face", "add_face", "copy_user"]
    copy = p.operations[-1]
    assert (copy.group_id, copy.src_group_id, copy.user_id) == ("g2", "g1", "alice")
    assert copy.after == (1, 2, 3, 4)  # its group's creation and every add of the source user
    assert Expect("g2", "alice", False) in copy.expects


def test_copy_from_a_group_where_the_user_is_already_in_sync():
    d = desired(DesiredGroup("g1", (user("alice", "a1", "a2", info="A"),)),
                DesiredGroup("g2", (user("alice", "a1", "a2", info="A", resolved=False),)))
    p = plan(d, live({"g1": {"alice": (("a1", "a2"), "A")}, "g2": {}}))
    assert kinds(p) == ["copy_user"]
    assert p.operations[0].after == ()
    assert Expect("g1", "alice", True, tuple(sorted((tok("a1"), tok("a2")))), "A") in p.operations[0].expects


def test_single_image_user_in_two_groups_is_added_not_copied():
    d = desired(DesiredGroup("g1", (user("alice", "a1"),)), DesiredGroup("g2", (user("alice", "a1"),)))
    p = plan(d, live({"g1": {}, "g2": {}}))
    assert kinds(p) == ["add_face", "add_face"]


def test_different_user_info_in_another_group_prevents_a_copy():
    d = desired(DesiredGroup("g1", (user("alice", "a1", "a2", info="A"),)),
                DesiredGroup("g2", (user("alice", "a1", "a2", info="B"),)))
    p = plan(d, live({"g1": {}, "g2": {}}))
    assert kinds(p).count("copy_user") == 0 and len(p.operations) == 4


def test_replacing_every_face_is_an_update_then_adds():
    d = desired(DesiredGroup("g", (user("bob", "n1", "n2", info="B"),)))
    p = plan(d, live({"g": {"bob": (("o1", "o2", "o3"), "B")}}))
    assert kinds(p) == ["update_user", "add_face"]
    update, add = p.operations
    assert update.face.source == "n1.jpg" and update.user_info == "B"
    assert add.face.source == "n2.jpg" and add.after == (0,)
    assert update.expects == (Expect("g", "bob", True, tuple(sorted(tok(n) for n in ("o1", "o2", "o3"))), "B"),)


def test_a_user_losing_faces_for_a_detected_photo_is_named_and_reupload_replaces_it_by_update():
    detected = replace(img("n2"), detected=True)
    d = desired(DesiredGroup("g", (DesiredUser("bob", (img("k1"), detected), "B"), user("ann", "a1", "a3", info="A"))))
    lv = live({"g": {"bob": (("k1", "o2"), "B"), "ann": (("a1", "a2"), "A")}})
    p = plan(d, lv)  # ann's new photo has a stored token: her lost face is certainly another picture
    assert p.replaced_by_detect == (("g", "bob"),) and not p.reupload
    assert [(op.kind.value, op.user_id) for op in p.operations if op.user_id == "bob"] == [
        ("add_face", "bob"), ("delete_face", "bob")]  # the cheaper form: adds first
    again = plan(d, lv, reupload=True)
    assert again.replaced_by_detect == (("g", "bob"),) and again.reupload
    bob = [op for op in again.operations if op.user_id == "bob"]
    assert [op.kind.value for op in bob] == ["update_user", "add_face"]  # no add meets the face it replaces
    assert bob[0].face.face_token == tok("k1") and bob[1].face.source == "n2.jpg"
    assert plan(desired(DesiredGroup("g", (DesiredUser("bob", (img("k1"), detected), "B"),), prune=False)),
                lv).replaced_by_detect == (("g", "bob"),)


def test_user_info_only_change_is_an_update_with_a_kept_face_then_re_adds_from_the_files():
    d = desired(DesiredGroup("g", (user("bob", "f1", "f2", "f3", info="new"),)))
    p = plan(d, live({"g": {"bob": (("f1", "f2", "f3"), "old")}}))
    assert kinds(p) == ["update_user", "add_face", "add_face"]
    update, *readds = p.operations
    assert update.face.kind is ImageKind.FACE_TOKEN and update.face.face_token == tok("f1")
    assert update.user_info == "new"
    assert [op.face.face_token for op in readds] == [tok("f2"), tok("f3")]
    # a FACE_TOKEN may stop working once no user holds its face: the bytes always do
    assert [op.face.kind for op in readds] == [ImageKind.FILE, ImageKind.FILE]
    assert [op.face.path for op in readds] == ["/m/f2.jpg", "/m/f3.jpg"]
    assert all(op.after == (0,) and op.user_info == "new" for op in readds)


def token_image(name: str) -> DesiredImage:
    return DesiredImage(ImageKind.FACE_TOKEN, tok(name), None, None, tok(name))


def test_an_update_goes_by_the_face_known_only_by_token_and_files_are_re_uploaded():
    bob = DesiredUser("bob", (img("f1"), token_image("t1")), "new")
    p = plan(desired(DesiredGroup("g", (bob,))), live({"g": {"bob": (("f1", "t1"), "old")}}))
    assert kinds(p) == ["update_user", "add_face"]
    update, readd = p.operations
    assert update.face.face_token == tok("t1")  # the user holds it while the update runs
    assert readd.face.kind is ImageKind.FILE and readd.face.face_token == tok("f1")


def test_faces_known_only_by_token_are_staged_in_a_copy_while_the_update_drops_them():
    bob = DesiredUser("bob", (token_image("t1"), token_image("t2"), img("f1")), "new")
    p = plan(desired(DesiredGroup("g", (bob,))), live({"g": {"bob": (("f1", "t1", "t2"), "old")}}))
    stage = "_facesync_stage_g"
    assert [(op.kind.value, op.group_id) for op in p.operations] == [
        ("create_group", stage), ("copy_user", stage), ("update_user", "g"), ("add_face", "g"),
        ("add_face", "g"), ("delete_group", stage)]
    _create, copy, update, readd_token, readd_file, delete = p.operations
    assert copy.src_group_id == "g" and copy.after == (0,)
    assert update.face.face_token == tok("t1") and 1 in update.after
    assert readd_token.face.kind is ImageKind.FACE_TOKEN and readd_token.face.face_token == tok("t2")
    assert readd_file.face.kind is ImageKind.FILE
    assert set(delete.after) == {2, 3, 4}
    assert p.safety.deleting == 0


def test_an_unpruned_user_keeps_its_unlisted_faces_through_the_update_by_staging():
    bob = DesiredUser("bob", (img("f1"),), "new")
    p = plan(desired(DesiredGroup("g", (bob,), prune=False)), live({"g": {"bob": (("f1", "x1", "x2"), "old")}}))
    assert "copy_user" in kinds(p) and kinds(p)[-1] == "delete_group"
    readds = [op for op in p.operations if op.kind.value == "add_face"]
    assert sorted(op.face.face_token for op in readds) == sorted([tok("f1"), tok("x2")])


def test_adds_to_a_user_whose_user_info_is_not_managed_send_back_what_the_library_has():
    d = desired(DesiredGroup("g", (user("bob", "f1", "f2"),)))
    p = plan(d, live({"g": {"bob": (("f1",), "kept")}}))
    assert kinds(p) == ["add_face"]
    assert p.operations[0].user_info == "kept"
    assert p.operations[0].expects[0].user_info == "kept"


def test_a_plan_that_adds_to_a_user_whose_user_info_was_not_read_is_refused():
    from facesync.plan.planner import user_info_to_read

    d = desired(DesiredGroup("g", (user("bob", "f1", "f2"), user("ann", "a1"))))
    lv = live({"g": {"bob": (("f1",), None), "ann": (("a1",), None)}}, read_info=False)
    assert user_info_to_read(d, lv) == {"bob"}  # ann is in sync: reading her costs a call for nothing
    with pytest.raises(ValueError, match=r"user_info .*\(bob\)"):
        plan(d, lv)


def test_user_info_change_rides_on_an_add_without_an_update():
    d = desired(DesiredGroup("g", (user("bob", "f1", "f2", info="new"),)))
    p = plan(d, live({"g": {"bob": (("f1",), "old")}}))
    assert kinds(p) == ["add_face"]
    assert p.operations[0].user_info == "new" and p.operations[0].face.source == "f2.jpg"


def test_user_info_change_with_many_extra_faces_prefers_the_cheaper_update():
    d = desired(DesiredGroup("g", (user("bob", "keep", "new", info="new"),)))
    p = plan(d, live({"g": {"bob": (("keep", "x1", "x2", "x3"), "old")}}))
    # adds and deletes would be 1 + 3 calls; update(keep) + add(new) is 2
    assert kinds(p) == ["update_user", "add_face"]
    assert p.operations[0].face.face_token == tok("keep")
    assert p.safety.deleting == 3  # the faces the update drops count as deletes


def test_an_update_sends_back_a_user_info_the_manifest_does_not_manage():
    d = desired(DesiredGroup("g", (user("bob", "n1", "n2"),)))  # user_info None: not managed
    p = plan(d, live({"g": {"bob": (("o1", "o2"), "kept")}}))
    assert [(op.kind.value, op.user_info) for op in p.operations] == [("update_user", "kept"), ("add_face", "kept")]
    with pytest.raises(ValueError, match="was not read"):  # it must be read first
        plan(d, live({"g": {"bob": (("o1", "o2"), None)}}, read_info=False))


def test_face_removal_waits_for_the_users_adds():
    d = desired(DesiredGroup("g", (user("bob", "f1", "f3"),)))
    p = plan(d, live({"g": {"bob": (("f1", "f2"), None)}}))
    assert kinds(p) == ["add_face", "delete_face"]
    assert p.operations[1].face_token == tok("f2") and p.operations[1].after == (0,)


def test_user_removal_is_one_user_delete():
    d = desired(DesiredGroup("g", (user("alice", "a1"),)))
    lv = live({"g": {"alice": (("a1",), None), "bob": (("b1", "b2", "b3"), None)}})
    p = plan(d, lv)
    assert kinds(p) == ["delete_user"]
    assert (p.operations[0].user_id, p.operations[0].reason) == ("bob", "user not in manifest")


def test_prune_off_keeps_unnamed_users_and_extra_faces():
    d = desired(DesiredGroup("g", (user("alice", "a1", "a2"),), prune=False))
    p = plan(d, live({"g": {"alice": (("a1", "x"), None), "bob": (("b1",), None)}}))
    assert kinds(p) == ["add_face"]


def test_unlisted_groups_are_left_alone_by_default_with_a_note():
    d = desired(DesiredGroup("g", (user("alice", "a1"),)))
    p = plan(d, live({"g": {"alice": (("a1",), None)}}, extra_groups=("other", LOCK_GROUP_PREFIX + "_hrx_abc_1_h")))
    assert p.empty
    assert p.notes == ("1 group not in the manifest left alone: other",)


def test_unlisted_group_is_one_delete_when_the_policy_says_so_but_never_protected_or_lock():
    d = desired(DesiredGroup("g", (user("alice", "a1"),)), delete_unlisted_groups=True,
                protected_groups=frozenset({"keep"}))
    p = plan(d, live({"g": {"alice": (("a1",), None)}}, extra_groups=("old", "keep", LOCK_GROUP_PREFIX + "_hrx_abc_1_h")))
    assert kinds(p) == ["delete_group"] and p.operations[0].group_id == "old"
    assert p.operations[0].expects == (Expect("old", None, True),)
    assert any("keep" in note and "protected" in note for note in p.notes)


def test_lock_group_in_the_manifest_is_not_managed():
    d = desired(DesiredGroup(LOCK_GROUP_PREFIX, (user("x", "a1"),)))
    p = plan(d, live({}))
    assert p.empty and any(LOCK_GROUP_PREFIX in note for note in p.notes)


def _ten_users(deleted: int):
    names = [f"u{i}" for i in range(10)]
    d = desired(DesiredGroup("g", tuple(user(n, n) for n in names[deleted:])), delete_threshold_min=10)
    lv = live({"g": {n: ((n,), None) for n in names}})
    return d, lv


def test_safety_allows_deleting_up_to_the_share():
    d, lv = _ten_users(deleted=1)  # 10 users + 9 faces exist; deleting 1 user
    p = plan(d, lv)
    assert (p.safety.existing, p.safety.deleting) == (19, 1) and not p.safety.unsafe


def test_safety_refuses_deleting_above_the_share():
    d, lv = _ten_users(deleted=6)  # 10 users + 4 faces; 6 deletes = 43%
    p = plan(d, lv)
    assert p.safety.unsafe and "6 of 14" in p.safety.reasons[0]
    assert len(p.operations) == 6  # the plan is still complete, for review
    assert not p.safety.forced and plan(d, lv, force=True).safety.forced


def test_safety_ignores_small_libraries():
    names = [f"u{i}" for i in range(4)]
    d = desired(DesiredGroup("g", ()), delete_threshold_min=10)
    p = plan(d, live({"g": {n: ((n,), None) for n in names}}))
    assert p.safety.deleting == 4 and not p.safety.unsafe


def test_operations_follow_the_global_order_and_wait_only_on_earlier_ones():
    d = desired(
        DesiredGroup("a", (user("u1", "x", "y", info="I"), user("u2", "z"))),
        DesiredGroup("b", (user("u1", "x", "y", info="I", resolved=False),)),
        delete_unlisted_groups=True,
    )
    lv = live({"a": {"u2": (("w",), None), "u3": (("q",), None)}}, extra_groups=("gone",))
    p = plan(d, lv)
    assert kinds(p) == ["create_group", "update_user", "add_face", "add_face", "copy_user", "delete_user",
                        "delete_group"]
    for index, op in enumerate(p.operations):
        assert all(dep < index for dep in op.after)


def test_plans_are_deterministic_and_created_at_comes_from_the_clock_only_when_not_given():
    d = desired(DesiredGroup("g", (user("alice", "a1", "a2"), user("bob", "b1"))))
    lv = live({"g": {"carol": (("c",), None)}})
    assert plan(d, lv) == plan(d, lv)
    stamped = make_plan(d, lv)
    assert stamped.created_at.endswith("Z") and stamped.created_at != "2024-01-01T00:00:00Z"
    assert make_plan(d, lv, qps=5, target="other").qps == 5


def test_narrow_to_a_user_prunes_only_that_user():
    d = desired(DesiredGroup("g", (user("alice", "a1"), user("bob", "b1"))), delete_unlisted_groups=True)
    lv = live({"g": {"alice": (("a1", "old"), None), "bob": (("b0",), None), "carol": (("c",), None)}},
              extra_groups=("unlisted",))
    p = plan(narrow(d, users={"alice"}), lv)
    assert [(op.kind.value, op.user_id) for op in p.operations] == [("delete_face", "alice")]


def test_narrow_to_a_group_never_deletes_unlisted_groups():
    d = desired(DesiredGroup("g", (user("alice", "a1"),)), DesiredGroup("h", (user("bob", "b1"),)),
                delete_unlisted_groups=True)
    p = plan(narrow(d, groups={"g"}), live({}, extra_groups=("unlisted",)))
    assert [(op.kind.value, op.group_id) for op in p.operations] == [("create_group", "g"), ("add_face", "g")]


def test_narrow_rejects_names_the_manifest_does_not_have():
    d = desired(DesiredGroup("g", (user("alice", "a1"),)))
    with pytest.raises(ConfigError, match="--group nope"):
        narrow(d, groups={"nope"})
    with pytest.raises(ConfigError, match="--user nobody"):
        narrow(d, users={"nobody"})
    assert narrow(d) is d


def test_user_with_no_images_is_removed():
    d = desired(DesiredGroup("g", (DesiredUser("bob", ()),)))
    p = plan(d, live({"g": {"bob": (("b1",), None)}}))
    assert kinds(p) == ["delete_user"]


def test_duplicate_images_are_added_once():
    d = desired(DesiredGroup("g", (user("alice", "a1", "a1", resolved=False),)))
    assert kinds(plan(d, live({"g": {}}))) == ["add_face"]


@pytest.mark.parametrize("users,faces", [(2000, 5)])
def test_large_in_sync_library_plans_to_nothing(users, faces):
    names = [f"u{i}" for i in range(users)]
    d = desired(DesiredGroup("g", tuple(user(n, *(f"{n}f{j}" for j in range(faces))) for n in names)))
    lv = live({"g": {n: (tuple(f"{n}f{j}" for j in range(faces)), None) for n in names}})
    p = plan(d, lv)
    assert p.empty and p.safety.existing == users * (faces + 1)


def test_a_face_another_user_keeps_does_not_move():
    """Without prune a user the manifest does not name keeps its faces: a face it holds is not moving."""
    token = "a" * 32
    live = Live(group_ids=("g",), groups={"g": LiveGroup("g", {"other": LiveUser("other", (token,), "")})})
    image = DesiredImage(ImageKind.FACE_TOKEN, token, face_token=token)
    for prune, reason in ((False, "new user"), (True, "moves from user other")):
        desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", (image,), "i"),), prune=prune),))
        plan = make_plan(desired, live, created_at="t")
        assert [op.reason for op in plan.operations if op.kind is OpKind.ADD_FACE] == [reason]
