"""Incremental refresh and its state, through the real local library: what it reads, what it trusts,
what it records, and that nothing it plans rests on a fact it did not read in the same run."""

from __future__ import annotations

import json
import threading
from collections import Counter

import pytest

from facesync.apply import execute
from facesync.cache import TokenCache
from facesync.errors import ConfigError
from facesync.incremental import FULL, INCREMENTAL, default_audit, plan_tracked, read_tracked
from facesync.local.store import LocalLibrary
from facesync.state import Known, default_path, load_state, record
from tests.support import images
from tests.support.incremental import full_plan, load

READS = ("group_getlist", "group_getusers", "face_getlist", "user_get")


class Counting(LocalLibrary):
    """The local library, counting the read calls made to it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: Counter[str] = Counter()
        self.read: list[tuple[str, ...]] = []

    def group_getlist(self, *args, **kwargs):
        self.calls["group_getlist"] += 1
        return super().group_getlist(*args, **kwargs)

    def group_getusers(self, *args, **kwargs):
        self.calls["group_getusers"] += 1
        return super().group_getusers(*args, **kwargs)

    def face_getlist(self, group_id, user_id, *args, **kwargs):
        self.calls["face_getlist"] += 1
        self.read.append((group_id, user_id))
        return super().face_getlist(group_id, user_id, *args, **kwargs)

    def user_get(self, group_id, user_id, *args, **kwargs):
        self.calls["user_get"] += 1
        self.read.append((user_id,))
        return super().user_get(group_id, user_id, *args, **kwargs)

    def take(self) -> dict[str, int]:
        calls = {name: self.calls[name] for name in READS if self.calls[name]}
        self.calls.clear()
        self.read.clear()
        return calls


def write_manifest(root, users: int, *, info: dict[int, str] | None = None, skip: frozenset[int] = frozenset(),
                   extra_image: dict[int, int] | None = None) -> str:
    """``users`` users u0.. in group staff, one photo each (plus ``extra_image[i]``), user_info managed."""
    faces = root / "faces"
    faces.mkdir(exist_ok=True)
    lines = ["version: 1", "groups:", "  staff:", "    users:"]
    for i in range(users):
        if i in skip:
            continue
        photos = [f"faces/u{i}.png"]
        (faces / f"u{i}.png").write_bytes(images.png(i + 1))
        if extra_image and i in extra_image:
            (faces / f"x{i}.png").write_bytes(images.png(1000 + extra_image[i]))
            photos.append(f"faces/x{i}.png")
        lines.append(f"      u{i}: {{user_info: {json.dumps((info or {}).get(i, f'U{i}'))}, "
                     f"images: [{', '.join(photos)}]}}")
    path = root / "faceset.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def env(tmp_path, monkeypatch, unknowns):
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    lib = Counting(str(tmp_path / "library.db"), unknowns=unknowns)
    cache = TokenCache.for_target(lib.identity)
    yield lib, cache, str(tmp_path / "state.json")
    cache.close()
    lib.close()


def plan(lib, cache, state_file, manifest, mode=INCREMENTAL, **options):
    desired = load(manifest)
    return plan_tracked(desired, lib, cache, mode=mode, state_file=state_file, **options,
                        **full_plan(desired, lib, cache))


def apply(lib, cache, tracked):
    result = execute(tracked.plan, lib, cache=cache)
    assert result.ok, result.failures
    tracked.record_apply(result.results)
    return result


def built(tmp_path, lib, cache, state_file, users=40, **manifest_options):
    manifest = write_manifest(tmp_path, users, **manifest_options)
    apply(lib, cache, plan(lib, cache, state_file, manifest))
    lib.take()
    return manifest


def assert_in_sync_for_the_listings_alone(lib, cache, state_file, manifest):
    """An incremental plan without audit says "No changes" after reading the listings only: the state
    holds what the last apply wrote."""
    lib.take()
    assert plan(lib, cache, state_file, manifest, audit=0).plan.empty
    assert lib.take() == {"group_getlist": 1, "group_getusers": 1}


# -- the state file -----------------------------------------------------------------------------------


def test_the_state_merges_by_verification_time_and_keeps_tombstones(tmp_path):
    path = tmp_path / "state.json"
    record(path, "local:/x", {("g", "a"): Known(("t1",), "A", 100.0, "e"), ("g", "b"): Known(("t2",), None, 100.0)})
    record(path, "local:/x", {("g", "a"): Known(("old",), "A", 50.0),  # read before: never replaces a newer fact
                              ("g", "b"): Known(None, None, 120.0, gone=True)}, now=130.0)
    record(path, "local:/x", {("g", "b"): Known(("t2",), None, 110.0)}, now=140.0)  # slower: b stays gone
    state = load_state(path, "local:/x")
    assert state.known(("g", "a")) == Known(("t1",), "A", 100.0, "e")
    assert state.known(("g", "b")) is None and state.users[("g", "b")].gone
    record(path, "local:/x", {("g", "a"): None})  # forgotten whatever its time: a write whose result is unsure
    assert load_state(path, "local:/x").known(("g", "a")) is None
    assert not list(tmp_path.glob(".facesync-*"))  # written through a temporary file, renamed


def test_concurrent_writers_lose_no_record(tmp_path):
    path = tmp_path / "state.json"

    def writer(n: int) -> None:
        for i in range(20):
            record(path, "local:/x", {(f"g{n}", f"u{i}"): Known((f"t{n}.{i}",), None, float(i))})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    state = load_state(path, "local:/x")
    assert len(state.users) == 6 * 20
    assert state.known(("g5", "u19")).face_tokens == ("t5.19",)


def test_a_damaged_state_is_set_aside_and_the_refresh_is_full(tmp_path, env, caplog):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=5)
    with open(state_file, "w") as handle:
        handle.write('{"format_version": 1, "target": ')
    tracked = plan(lib, cache, state_file, manifest)
    assert "damaged" in caplog.text and (tmp_path / "state.json.corrupt").exists()
    assert tracked.trust.mode == FULL and "no state of this library yet" in tracked.plan.live_source
    assert lib.take()["face_getlist"] == 5
    assert load_state(state_file, lib.identity).known(("staff", "u0")) is not None  # rebuilt


def test_a_state_of_another_library_is_refused(tmp_path, env):
    lib, cache, state_file = env
    record(state_file, "local:/elsewhere.db", {("staff", "u0"): Known(("t",), None, 1.0)})
    with pytest.raises(ConfigError, match="is of the library local:/elsewhere.db"):
        plan(lib, cache, state_file, write_manifest(tmp_path, 2))


def test_the_default_state_is_one_file_per_library_in_the_cache_folder(tmp_path, env):
    lib, cache, _ = env
    manifest = write_manifest(tmp_path, 3)
    plan(lib, cache, None, manifest, mode=FULL)
    path = default_path(lib.identity)
    assert path.parent == tmp_path / "cache" and path.name.startswith("state-")
    assert not path.exists()  # an empty library: nothing read, nothing to keep
    apply(lib, cache, plan(lib, cache, None, manifest))
    document = json.loads(path.read_text())
    assert document["target"] == lib.identity
    assert {row["user_id"] for row in document["users"]} == {"u0", "u1", "u2"}


# -- what an incremental refresh reads ----------------------------------------------------------------


def test_without_a_state_the_refresh_is_full_and_says_so(tmp_path, env):
    lib, cache, state_file = env
    tracked = plan(lib, cache, state_file, write_manifest(tmp_path, 3))
    assert tracked.trust.mode == FULL
    assert tracked.plan.live_source == f"refresh (full: no state of this library yet, at {state_file})"


def test_an_in_sync_library_costs_the_listings_and_the_audit(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=250)
    tracked = plan(lib, cache, state_file, manifest)
    assert tracked.plan.empty
    assert default_audit(250) == 3
    assert lib.take() == {"group_getlist": 1, "group_getusers": 1, "face_getlist": 3, "user_get": 3}
    assert (tracked.trust.users_read, tracked.trust.users_from_state, tracked.trust.audited) == (3, 247, 3)
    assert "incremental refresh: 3 users read (3 for the audit), 247 users from the state" in tracked.plan.live_source
    assert tracked.trust.oldest_verified_at is not None
    plan(lib, cache, state_file, manifest, mode=FULL)
    assert lib.take() == {"group_getlist": 1, "group_getusers": 1, "face_getlist": 250, "user_get": 250}


def test_the_audit_rotates_through_the_least_recently_verified(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=9)
    seen: list[set] = []
    for _run in range(3):
        plan(lib, cache, state_file, manifest, audit=3)
        seen.append({subject[1] for subject in lib.read if len(subject) == 2})
        lib.take()
    assert seen[0] | seen[1] | seen[2] == {f"u{i}" for i in range(9)}
    assert all(len(users) == 3 for users in seen)


def test_changed_entries_are_read_and_planned_as_a_full_refresh_plans_them(tmp_path, env):
    lib, cache, state_file = env
    built(tmp_path, lib, cache, state_file, users=30)
    manifest = write_manifest(tmp_path, 30, info={3: "changed", 7: "changed too"}, extra_image={11: 1})
    tracked = plan(lib, cache, state_file, manifest, audit=0)
    calls = lib.take()
    assert calls == {"group_getlist": 1, "group_getusers": 1, "face_getlist": 3, "user_get": 3}
    full = plan(lib, cache, None, manifest, mode=FULL)
    assert tracked.plan.operations == full.plan.operations
    assert {op.user_id for op in tracked.plan.operations} == {"u3", "u7", "u11"}


def test_an_out_of_band_user_deletion_is_found_on_the_first_run(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=30)
    lib.user_delete("staff", "u4")
    lib.take()
    tracked = plan(lib, cache, state_file, manifest, audit=0)
    assert [(op.kind.value, op.user_id) for op in tracked.plan.operations] == [("add_face", "u4")]
    assert lib.take() == {"group_getlist": 1, "group_getusers": 1}  # a new user needs no read
    apply(lib, cache, tracked)
    assert plan(lib, cache, state_file, manifest, audit=0).plan.empty


def test_an_out_of_band_user_is_pruned_on_the_first_run_and_its_record_dropped(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=5)
    lib.user_add("staff", "intruder", _image(77))
    tracked = plan(lib, cache, state_file, manifest, audit=0)
    assert [(op.kind.value, op.user_id) for op in tracked.plan.operations] == [("delete_user", "intruder")]
    apply(lib, cache, tracked)
    assert load_state(state_file, lib.identity).known(("staff", "intruder")) is None
    assert_in_sync_for_the_listings_alone(lib, cache, state_file, manifest)


def test_a_vanished_user_becomes_a_tombstone(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=5)
    lib.user_delete("staff", "u2")
    plan(lib, cache, state_file, manifest, audit=0)
    state = load_state(state_file, lib.identity)
    assert state.users[("staff", "u2")].gone and state.known(("staff", "u1")) is not None


def test_an_out_of_band_face_deletion_is_found_within_the_audit_window(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=20, extra_image={13: 5})
    lib.face_delete("staff", "u13", lib.face_getlist("staff", "u13").faces[0].face_token)
    runs = 0
    while True:
        runs += 1
        tracked = plan(lib, cache, state_file, manifest, audit=5)
        if not tracked.plan.empty:
            break
        assert runs < 4, "not found within the audit window of 20 / 5 = 4 runs"
    assert [(op.kind.value, op.user_id) for op in tracked.plan.operations] == [("add_face", "u13")]


def test_a_stale_state_is_read_again_before_the_plan_relies_on_it(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=6, extra_image={2: 9})
    # the state says u2 lacks its second photo (as though read before it was added): the plan would add it
    state = load_state(state_file, lib.identity)
    stale = state.users[("staff", "u2")]
    record(state_file, lib.identity, {("staff", "u2"): None})
    record(state_file, lib.identity, {("staff", "u2"): Known(stale.face_tokens[:1], stale.user_info,
                                                              stale.verified_at, stale.entry)})
    lib.take()
    tracked = plan(lib, cache, state_file, manifest, audit=0)
    assert tracked.plan.empty  # read again before the add: the library has it
    assert ("staff", "u2") in lib.read
    assert tracked.unread_dependencies() == (set(), set())


def test_every_fact_an_operation_depends_on_was_read_in_the_run(tmp_path, env):
    lib, cache, state_file = env
    built(tmp_path, lib, cache, state_file, users=12, extra_image={1: 1, 2: 2})
    manifest = write_manifest(tmp_path, 12, info={5: "new"}, skip=frozenset({8}), extra_image={1: 3})
    tracked = plan(lib, cache, state_file, manifest, audit=0)
    assert tracked.plan.operations
    for op in tracked.plan.operations:
        for expect in op.expects:
            if expect.user_id is not None and expect.exists and expect.face_tokens is not None:
                assert (expect.group_id, expect.user_id) in tracked.fresh
            if expect.user_id is not None and expect.exists and expect.user_info is not None:
                assert expect.user_id in tracked.fresh_info


def test_an_apply_records_what_it_wrote(tmp_path, env):
    lib, cache, state_file = env
    built(tmp_path, lib, cache, state_file, users=8)
    manifest = write_manifest(tmp_path, 8, info={0: "renamed"}, extra_image={4: 4})
    apply(lib, cache, plan(lib, cache, state_file, manifest, audit=0))
    state = load_state(state_file, lib.identity)
    assert state.known(("staff", "u0")).user_info == "renamed"
    held = [face.face_token for face in lib.face_getlist("staff", "u4").faces]
    assert len(held) == 2 and sorted(state.known(("staff", "u4")).face_tokens) == sorted(held)
    assert_in_sync_for_the_listings_alone(lib, cache, state_file, manifest)


def test_a_snapshot_reads_incrementally_and_keeps_the_state(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=10)
    desired = load(manifest)
    live = read_tracked(lib, desired, mode=INCREMENTAL, state_file=state_file, audit=2)
    assert lib.take() == {"group_getlist": 1, "group_getusers": 1, "face_getlist": 2, "user_get": 2}
    assert len(live.groups["staff"].users) == 10 and live.source.startswith("incremental refresh: 2 users read")
    full = read_tracked(lib, desired, mode=FULL, state_file=state_file)
    assert {uid: (u.face_tokens, u.user_info) for uid, u in live.groups["staff"].users.items()} == \
        {uid: (u.face_tokens, u.user_info) for uid, u in full.groups["staff"].users.items()}


def test_policy_refresh_is_the_default_mode(tmp_path, env):
    lib, cache, state_file = env
    manifest = built(tmp_path, lib, cache, state_file, users=4)
    path = tmp_path / "faceset.yaml"
    path.write_text(path.read_text().replace("version: 1\n", "version: 1\npolicy: {refresh: incremental}\n"))
    tracked = plan(lib, cache, state_file, manifest, mode=None, audit=0)
    assert tracked.trust.mode == INCREMENTAL and lib.take() == {"group_getlist": 1, "group_getusers": 1}
    assert plan(lib, cache, state_file, manifest, mode=FULL).trust.mode == FULL


def _image(seed: int):
    from facesync.api.protocol import Image

    return Image.from_bytes(images.png(seed))


def test_a_fact_taken_from_the_state_is_checked_before_the_first_write(tmp_path, env):
    from dataclasses import replace

    from facesync.errors import PlanStaleError

    lib, cache, state_file = env
    built(tmp_path, lib, cache, state_file, users=4)
    tracked = plan(lib, cache, state_file, write_manifest(tmp_path, 4, info={1: "renamed"}), audit=0)
    assert [op.user_id for op in tracked.plan.operations] == ["u1"]
    tracked.check_before_write(lib)  # every fact was read in this run: nothing to check
    as_if_trusted = replace(tracked, fresh=frozenset(), fresh_info=frozenset())
    assert as_if_trusted.unread_dependencies() == ({("staff", "u1")}, {"u1"})
    lib.take()
    as_if_trusted.check_before_write(lib)  # still true: read again, and the apply may go on
    assert lib.take()["face_getlist"] == 1
    lib.user_add("staff", "u1", _image(99), user_info="U1")  # moved since the plan
    with pytest.raises(PlanStaleError, match="the state this plan trusted is out of date"):
        as_if_trusted.check_before_write(lib)


def test_tombstones_are_dropped_after_a_week(tmp_path):
    path = tmp_path / "state.json"
    record(path, "local:/x", {("g", "gone"): Known(None, None, 1000.0, gone=True),
                              ("g", "here"): Known(("t",), None, 1000.0)}, now=1000.0)
    assert load_state(path, "local:/x").users[("g", "gone")].gone
    record(path, "local:/x", {("g", "other"): Known(("u",), None, 1000.0 + 8 * 86400)}, now=1000.0 + 8 * 86400)
    assert set(load_state(path, "local:/x").users) == {("g", "here"), ("g", "other")}


def test_facts_are_stamped_with_the_start_of_the_read_that_gave_them(tmp_path, env):
    lib, cache, state_file = env
    manifest = write_manifest(tmp_path, 3)
    ticks = iter(range(1000, 2000, 10))
    seen: list[float] = []

    def clock() -> float:
        seen.append(float(next(ticks)))
        return seen[-1]

    apply(lib, cache, plan(lib, cache, state_file, manifest, mode=FULL, clock=clock))
    state = load_state(state_file, lib.identity)
    assert {known.verified_at for known in state.users.values()} == {seen[0]}  # written: the plan's start
    started = len(seen)
    plan(lib, cache, state_file, manifest, audit=1, clock=clock)  # reads u0 for the audit
    state = load_state(state_file, lib.identity)
    assert seen[started] < state.known(("staff", "u0")).verified_at < seen[-1]  # its read's start, not the end
    assert state.known(("staff", "u1")).verified_at == seen[0]  # not read: as old as before


def test_a_state_of_another_library_is_never_written_over(tmp_path, caplog):
    path = tmp_path / "state.json"
    record(path, "local:/a.db", {("g", "u"): Known(("t",), None, 1.0)})
    record(path, "local:/b.db", {("g", "v"): Known(("w",), None, 2.0)})  # e.g. apply PLAN.json --state FILE
    assert "is of the library local:/a.db" in caplog.text
    assert set(load_state(path, "local:/a.db").users) == {("g", "u")}
