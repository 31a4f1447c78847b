"""facesync snapshot and offline plans: the saved state plans exactly as the live library does, with no
network; unknown images are added; what the snapshot cannot answer is refused; a stale plan is refused
by apply."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace

import pytest

from facesync.api.protocol import Image
from facesync.apply import execute
from facesync.cache import TokenCache
from facesync.clock import utc_epoch
from facesync.local.store import LocalLibrary
from facesync.plan import planfile
from facesync.session import Session, load_manifest
from facesync.snapshot import (
    SnapshotError,
    age_text,
    load_snapshot,
    take_snapshot,
    write_snapshot,
)
from tests.support.cli import run_facesync
from tests.support.images import png


def plan_offline(manifest: str, snapshot_path: str, **options):
    """The plan of ``manifest`` against the snapshot, with what was unresolved offline."""
    with Session.offline(snapshot_path) as session:
        return session.plan_with_details(manifest, **options)[1]


def _facesync(args: list[str], **options) -> subprocess.CompletedProcess:
    """Run the facesync command line as a user would; the caller reads the exit code."""
    return run_facesync(*args, **options)

MANIFEST = """\
version: 1
groups:
  staff:
    users:
      alice: {user_info: "Alice", images: [faces/a1.png, faces/a2.png]}
      bob: {images: [faces/b.png]}
  visitors:
    users:
      dave: {user_info: "Dave", images: [faces/d.png]}
people:
  carol: {groups: [staff, visitors], user_info: "Carol", images: [faces/c1.png, faces/c2.png]}
"""
IMAGES = {"a1": 1, "a2": 2, "b": 3, "d": 4, "c1": 5, "c2": 6, "c3": 7, "e": 8}


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A manifest folder with its images, and a local library built from the manifest by apply."""
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FACESYNC_TARGET", raising=False)
    (tmp_path / "faces").mkdir()
    for name, seed in IMAGES.items():
        (tmp_path / "faces" / f"{name}.png").write_bytes(png(seed))
    path = tmp_path / "faceset.yaml"
    path.write_text(MANIFEST)
    target = f"local:{tmp_path / 'lib.db'}"
    with Session(target) as session:
        assert execute(session.plan(str(path)), session.library, cache=session.cache).ok
    return {"dir": tmp_path, "manifest": str(path), "target": target, "db": str(tmp_path / "lib.db")}


def _drift(db: str) -> None:
    """Changes made behind the manifest's back."""
    lib = LocalLibrary(db)
    try:
        alice = lib.face_getlist("staff", "alice").faces
        lib.face_delete("staff", "alice", alice[0].face_token)
        dave = lib.face_getlist("visitors", "dave").faces[0].face_token
        lib.user_update("visitors", "dave", Image.from_face_token(dave), user_info="Dave, old badge")
        lib.user_add("staff", "eve", Image.from_bytes(png(99)))
        lib.group_add("other")
    finally:
        lib.close()


def _snapshot(world, manifest: str | None, name: str = "live.json") -> str:
    lib = LocalLibrary(world["db"])
    desired = load_manifest(manifest).desired if manifest else None
    try:
        with TokenCache.for_target(lib.identity) as cache:
            snapshot = take_snapshot(lib, desired, cache)
    finally:
        lib.close()
    path = str(world["dir"] / name)
    write_snapshot(snapshot, path)
    return path


def _edit(world, old: str, new: str) -> None:
    path = world["dir"] / "faceset.yaml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_snapshot_round_trip(world):
    path = _snapshot(world, world["manifest"])
    snapshot = load_snapshot(path)
    assert snapshot.target == f"local:{world['db']}"
    assert set(snapshot.live.groups) == {"staff", "visitors"}
    carol = snapshot.live.groups["visitors"].users["carol"]
    assert carol.user_info == "Carol" and len(carol.face_tokens) == 2
    assert snapshot.live.groups["staff"].users["bob"].user_info is None  # not managed: not read
    assert len(snapshot.tokens) == 6  # every image of an existing user, by content sha256
    again = str(world["dir"] / "again.json")
    write_snapshot(snapshot, again)
    assert load_snapshot(again).live.groups == snapshot.live.groups
    with open(again) as handle:
        assert json.load(handle)["taken_at"] == snapshot.taken_at


def test_offline_plan_equals_online_plan_of_the_same_state(world):
    _drift(world["db"])
    _edit(world, "faces/c2.png]", "faces/c2.png, faces/c3.png]")
    path = _snapshot(world, world["manifest"])
    with Session(world["target"]) as session:
        online = session.plan(world["manifest"])
    offline = plan_offline(world["manifest"], path).plan
    assert not online.empty
    assert offline.operations == online.operations
    assert (offline.safety, offline.target, offline.notes) == (online.safety, online.target, online.notes)
    assert offline.live_source.startswith(f"snapshot {path} of local:{world['db']} taken at ")


def test_plan_states_the_snapshot_age_and_target(world):
    path = _snapshot(world, world["manifest"])
    taken = utc_epoch(load_snapshot(path).taken_at)
    result = plan_offline(world["manifest"], path, now=taken + 3 * 3600 + 100)
    assert result.plan.empty
    assert result.plan.live_source.endswith("(3 h ago)")
    assert f"of local:{world['db']}" in result.plan.live_source
    assert [age_text(s) for s in (5, 600, 7200, 5 * 86400)] == ["5 s ago", "10 min ago", "2 h ago", "5 days ago"]


@pytest.mark.lenient_unknowns  # a fork's empty cache recognises faces only where detect answers the stored token
def test_unknown_image_is_planned_as_new_and_the_plan_applies(world, monkeypatch):
    path = _snapshot(world, world["manifest"])
    _edit(world, "faces/c2.png]", "faces/c2.png, faces/c3.png]")
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(world["dir"] / "fresh-cache"))  # a fork's empty cache
    result = plan_offline(world["manifest"], path)
    adds = [op for op in result.plan.operations]
    assert [(op.kind.value, op.group_id, op.user_id, op.face.source) for op in adds] == [
        ("add_face", "staff", "carol", "faces/c3.png"), ("add_face", "visitors", "carol", "faces/c3.png")]
    assert all(op.face.face_token is None for op in adds)  # unknown offline: an upload
    assert any("faces/c3.png" in note and "new faces" in note for note in result.plan.notes)
    assert [image.source for image in result.unresolved] == ["faces/c3.png"]
    shown = _facesync(["plan", world["manifest"], "--live", path], timeout=120, env=dict(os.environ))
    assert shown.returncode == 0, shown.stderr
    assert "new faces planned for 1 image unknown to the snapshot: faces/c3.png" in shown.stdout + shown.stderr

    plan_path = world["dir"] / "plan.json"
    planfile.write_plan(result.plan, plan_path)
    done = _facesync(["apply", str(plan_path), "--yes"], timeout=120, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    with Session(world["target"]) as session:
        assert session.plan(world["manifest"]).empty


def test_apply_refuses_a_snapshot_plan_whose_facts_moved(world):
    path = _snapshot(world, world["manifest"])
    _edit(world, '"Dave"', '"Dave, visitor"')
    plan = plan_offline(world["manifest"], path).plan
    assert [op.kind.value for op in plan.operations] == ["update_user"]
    plan_path = world["dir"] / "plan.json"
    planfile.write_plan(plan, plan_path)
    _drift(world["db"])  # dave changed after the snapshot
    done = _facesync(["apply", str(plan_path), "--yes"], timeout=120, env=dict(os.environ))
    assert done.returncode == 1
    assert "changed since this plan was made" in done.stderr and "visitors/dave" in done.stderr
    assert "Traceback" not in done.stderr
    lib = LocalLibrary(world["db"])
    try:
        assert lib.user_get("visitors", "dave").memberships[0].user_info == "Dave, old badge"
    finally:
        lib.close()


def test_a_snapshot_that_did_not_read_what_the_manifest_needs_is_refused(world):
    path = _snapshot(world, world["manifest"])
    _drift(world["db"])
    lib = LocalLibrary(world["db"])
    lib.user_add("other", "zed", Image.from_bytes(png(77)))
    lib.close()
    path = _snapshot(world, world["manifest"], "after.json")  # "other" exists, unmanaged: not read
    _edit(world, "  visitors:\n", "  other:\n    users:\n      bob: {images: [faces/b.png]}\n  visitors:\n")
    _edit(world, '      bob: {images: [faces/b.png]}\n  visitors', '      bob: {user_info: "Bob", images: [faces/b.png]}\n'
                                                                 '  visitors')
    with pytest.raises(SnapshotError) as caught:
        plan_offline(world["manifest"], path)
    message = str(caught.value)
    assert "group other: its users were not read" in message
    assert "user staff/bob: user_info was not read" in message
    assert "facesync snapshot MANIFEST" in message


def test_whole_library_snapshot(world, monkeypatch, tmp_path):
    _drift(world["db"])
    path = _snapshot(world, None)
    snapshot = load_snapshot(path)
    assert snapshot.scope == "library" and snapshot.tokens == {}
    assert set(snapshot.live.groups) == {"staff", "visitors", "other"}
    assert snapshot.live.groups["staff"].users["bob"].user_info == ""  # everything is read

    exported = tmp_path / "exported.yaml"
    done = _facesync(["export", "--target", world["target"], "--out", str(exported)], timeout=60,
                     env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert plan_offline(str(exported), path).plan.empty  # face_token images need no token map

    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "fresh-cache"))
    with pytest.raises(SnapshotError, match="could delete a face the manifest wants"):
        plan_offline(world["manifest"], path)  # file images, no token map, no cache: not guessed


@pytest.mark.parametrize("change, expected", [
    (lambda d: "{not json", "not JSON"),
    (lambda d: {k: v for k, v in d.items() if k != "target"}, "at (top level): 'target' is a required property"),
    (lambda d: {**d, "format_version": 2}, "snapshot format 2; this facesync reads format 1"),
    (lambda d: {**d, "taken_at": "yesterday"}, "at /taken_at: 'yesterday' does not match"),
    (lambda d: {**d, "groups": [{**d["groups"][0], "users": [{"user_id": "x", "face_tokens": "abc",
                                                                "user_info": None}]}]},
     "at /groups/0/users/0/face_tokens: 'abc' is not of type 'array', 'null'"),
    (lambda d: {**d, "group_ids": ["visitors"]}, "group staff is not in group_ids"),
    (lambda d: {**d, "tokens": {"abc": "t"}}, "at /tokens"),
])
def test_bad_snapshot_files_get_clear_errors(world, change, expected):
    path = _snapshot(world, world["manifest"])
    with open(path) as handle:
        document = json.load(handle)
    changed = change(document)
    bad = world["dir"] / "bad.json"
    bad.write_text(changed if isinstance(changed, str) else json.dumps(changed))
    with pytest.raises(SnapshotError) as caught:
        load_snapshot(bad)
    assert str(bad) in str(caught.value)
    assert expected in str(caught.value)
    with pytest.raises(SnapshotError, match="cannot read snapshot"):
        load_snapshot(world["dir"] / "missing.json")


def test_snapshot_cli_local_and_bad_targets(world):
    out = world["dir"] / "cli.json"
    env = dict(os.environ)
    done = _facesync(["snapshot", world["manifest"], "--target", world["target"], "--out", str(out)], timeout=60,
                     env=env)
    assert done.returncode == 0, done.stderr
    assert "--live" in done.stderr
    assert load_snapshot(out).target == f"local:{world['db']}"
    for target in ("nonsense", f"local:{world['dir'] / 'missing.db'}", "http://127.0.0.1:9"):
        bad = _facesync(["snapshot", "--target", target, "--out", str(world["dir"] / "x.json")], timeout=60,
                        env={k: v for k, v in env.items() if not k.startswith("BAIDU_")})
        assert bad.returncode == 1, target
        assert bad.stderr.startswith("Error:") and "Traceback" not in bad.stderr
        assert not (world["dir"] / "x.json").exists()


def test_snapshot_over_http_plans_offline_as_online(world, serve, monkeypatch):
    _drift(world["db"])
    server = serve(db=world["db"])
    out = world["dir"] / "served.json"
    env = {**server.env()}
    done = _facesync(["snapshot", world["manifest"], "--out", str(out)], timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert server.api_key not in out.read_text() and server.secret_key not in out.read_text()
    snapshot = load_snapshot(out)
    assert snapshot.target == f"{server.base_url} app {server.app_id}"

    for name in ("BAIDU_API_KEY", "BAIDU_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    server.reset()
    offline = plan_offline(world["manifest"], str(out))  # no credentials, no call
    assert server.stats()["total"] == 0
    assert offline.plan.qps == 10.0
    monkeypatch.setenv("BAIDU_API_KEY", server.api_key)
    monkeypatch.setenv("BAIDU_SECRET_KEY", server.secret_key)
    with Session(server.base_url) as session:
        online = session.plan(world["manifest"])
    assert offline.plan.operations == online.operations and not online.empty
    assert replace(offline.plan, live_source="", created_at="") == replace(online, live_source="", created_at="")
