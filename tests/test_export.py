"""facesync export: the manifest of an existing library plans to no changes, streams in library order,
quotes what YAML would misread, and never leaves a partial file."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess

import jsonschema
import pytest
import yaml

from facesync import manifest, schemas
from facesync.api.protocol import Image
from facesync.export import export_manifest, key, quoted
from facesync.files import atomic_output
from facesync.local.store import LocalLibrary
from facesync.session import Session
from tests.support.cli import run_facesync
from tests.support.images import png


def _facesync(args: list[str], **options) -> subprocess.CompletedProcess:
    """Run the facesync command line as a user would; the caller reads the exit code."""
    return run_facesync(*args, **options)

ODD_INFO = 'He said "hi"\nline two: #not a comment, \u2028 and \u00e9 \U0001f600 \\ end'


def build_library(path: str) -> dict:
    """Several groups, users shared between groups (same and different user_info), many faces."""
    lib = LocalLibrary(path)
    seed = 0

    def add(group_id, user_id, faces, info):
        nonlocal seed
        for _ in range(faces):
            seed += 1
            lib.user_add(group_id, user_id, Image.from_bytes(png(seed)), user_info=info)

    try:
        for group_id in ("staff", "visitors", "007", "true", "empty"):
            lib.group_add(group_id)
        for i in range(30):
            add("staff", f"u{i:02d}", 1 + i % 3, f"User {i}")
        for i in range(8):  # the same users, same faces and user_info, in a second group
            lib.user_copy(f"u{i:02d}", "staff", "visitors")
        add("visitors", "guest", 2, "")
        add("007", "u03", 1, "User 3")  # shared user_id, other faces, same user_info
        add("007", "u05", 1, "a different user_info")  # shared user_id, different user_info
        add("true", "null", 2, ODD_INFO)
        add("true", "123", 1, "null")
    finally:
        lib.close()
    return {"faces": seed + 16 + 3}  # 16 faces came by copy


def test_export_then_plan_shows_no_changes(tmp_path):
    db = str(tmp_path / "lib.db")
    build_library(db)
    out = io.StringIO()
    lib = LocalLibrary(db)
    try:
        stats = export_manifest(lib, out, target=f"local:{db}", concurrency=3, window=5)
    finally:
        lib.close()
    text = out.getvalue()
    path = tmp_path / "exported.yaml"
    path.write_text(text)

    assert (stats.groups, stats.users) == (5, 30 + 8 + 1 + 2 + 2)
    assert stats.info_left_out == ("u05",)
    jsonschema.validate(yaml.safe_load(text), schemas.load("manifest"))
    desired = manifest.load(str(path)).desired
    assert [g.group_id for g in desired.groups] == ["staff", "visitors", "007", "true", "empty"]
    staff = desired.group("staff")
    assert [u.user_id for u in staff.users] == [f"u{i:02d}" for i in range(30)]  # library order
    odd = next(u for u in desired.group("true").users if u.user_id == "null")
    assert odd.user_info == ODD_INFO
    assert next(u for u in desired.group("true").users if u.user_id == "123").user_info == "null"
    u05 = [u for g in desired.groups for u in g.users if u.user_id == "u05"]
    assert len(u05) == 3 and all(u.user_info is None for u in u05)  # differs between groups: unmanaged
    assert all(u.user_info is not None for g in desired.groups for u in g.users if u.user_id != "u05")

    with Session(f"local:{db}") as session:
        plan, details = session.plan_with_details(str(path))
        assert plan.empty, [op.key for op in plan.operations]
        assert details.resolve_stats.detect_calls == 0


def test_export_group_filter_header_and_atomic_file_through_the_cli(tmp_path):
    db = str(tmp_path / "lib.db")
    build_library(db)
    out = tmp_path / "part.yaml"
    env = {**os.environ, "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FACESYNC_TARGET", None)
    done = _facesync(["export", "--target", f"local:{db}", "--group", "007", "--group", "visitors",
                      "--out", str(out)], env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    assert "Exported 2 groups" in done.stderr
    text = out.read_text()
    first = text.splitlines()[0]
    assert re.fullmatch(rf"# Exported by facesync export from local:{re.escape(db)} \(groups: 007, visitors\) "
                        r"at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\.", first), first
    data = yaml.safe_load(text)
    assert list(data["groups"]) == ["visitors", "007"]  # library order, not the order asked
    assert data["target"] == f"local:{db}"
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]

    to_stdout = _facesync(["export", "--target", f"local:{db}", "--group", "true"], env=env, timeout=60)
    assert to_stdout.returncode == 0
    assert list(yaml.safe_load(to_stdout.stdout)["groups"]) == ["true"]
    dash = _facesync(["export", "--target", f"local:{db}", "--group", "true", "-o", "-"], env=env, timeout=60,
                     cwd=tmp_path)
    assert dash.returncode == 0, dash.stderr
    assert list(yaml.safe_load(dash.stdout)["groups"]) == ["true"]  # - is stdout, as everywhere
    assert not (tmp_path / "-").exists() and " to -" not in dash.stderr

    with Session(f"local:{db}") as session:
        assert session.plan(str(out)).empty


@pytest.mark.parametrize("args, message", [
    (["--target", "nonsense"], "unknown target"),
    (["--target", "local:{tmp}/missing.db"], "does not exist"),
    (["--target", "local:{db}", "--group", "nope"], "no such group"),
    (["--target", "local:{db}", "--out", "{tmp}/no/such/folder/x.yaml"], "cannot write the manifest"),
])
def test_export_errors_are_clear_without_traceback(tmp_path, args, message):
    db = tmp_path / "lib.db"
    LocalLibrary(str(db)).close()
    args = [a.format(tmp=tmp_path, db=db) for a in args]
    env = {**os.environ, "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    done = _facesync(["export", *args], timeout=60, env=env)
    assert done.returncode == 1
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_atomic_output_keeps_the_old_file_when_interrupted(tmp_path):
    path = tmp_path / "faceset.yaml"
    path.write_text("old\n")
    with pytest.raises(KeyboardInterrupt), atomic_output(str(path)) as handle:
        handle.write("version: 1\ngroups:\n")
        raise KeyboardInterrupt
    assert path.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["faceset.yaml"]
    with atomic_output(str(path)) as handle:
        handle.write("new\n")
    assert path.read_text() == "new\n"


@pytest.mark.parametrize("text", ["0123456789", "1e3", "true", "null", "~", "", " x", "a: b", "- x", "#x",
                                  "\u2028", "\x85", "\ufeffx", "tab\there", "'", '"', "\\", "%x", "@x", "x" * 500])
def test_quoting_round_trips_every_scalar(text):
    assert yaml.safe_load(f"k: {quoted(text)}\n") == {"k": text}
    assert yaml.safe_load(f"{key(text) if text else quoted(text)}: 1\n") == {text: 1}


def test_export_over_http_calls_user_get_once_per_user_and_fails_atomically(tmp_path, serve):
    db = str(tmp_path / "served.db")
    build_library(db)
    server = serve(db=db)
    out = tmp_path / "served.yaml"
    env = {**server.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    server.reset()
    done = _facesync(["export", "--qps", "1000", "--out", str(out)], env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    counters = server.stats()["counters"]
    user_get = sum(n for endpoint, n in counters.items() if endpoint.endswith("faceset/user/get"))
    getlist = sum(n for endpoint, n in counters.items() if endpoint.endswith("faceset/face/getlist"))
    assert user_get == 30 + 1 + 2  # distinct user_ids
    assert getlist == 30 + 8 + 1 + 2 + 2  # (group, user) pairs
    assert server.api_key not in done.stderr + out.read_text()
    first = out.read_text().splitlines()[0]
    assert f"from {server.base_url} app {server.app_id}" in first

    faults = tmp_path / "faults.yaml"
    faults.write_text(json.dumps({"seed": 1, "faults": [
        {"kind": "error", "rate": 1.0, "codes": [17], "endpoints": ["faceset/face/getlist"]}]}))
    failing = serve("--faults", str(faults), db=db)
    env = {**failing.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    before = out.read_text()
    broken = _facesync(["export", "--qps", "1000", "--out", str(out)], env=env, timeout=120)
    assert broken.returncode == 1
    assert "Traceback" not in broken.stderr and broken.stderr.startswith("Error:")
    assert out.read_text() == before
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_export_user_fragment_adopts_a_few_users_into_an_existing_manifest(tmp_path):
    """staff holds u00..u29 and visitors u00..u07 (copies) and guest; the manifest lists only some."""
    db = str(tmp_path / "lib.db")
    build_library(db)
    env = {**os.environ, "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FACESYNC_TARGET", None)
    whole = io.StringIO()
    lib = LocalLibrary(db)
    try:
        export_manifest(lib, whole, target=f"local:{db}", groups=("staff", "visitors"))
    finally:
        lib.close()
    exported = yaml.safe_load(whole.getvalue())
    kept = {"staff": [f"u{i:02d}" for i in range(2, 30)], "visitors": [f"u{i:02d}" for i in range(2, 8)] + ["guest"]}
    main = {"version": 1, "target": f"local:{db}",
            "groups": {group_id: {"users": {user_id: exported["groups"][group_id]["users"][user_id]
                                            for user_id in user_ids}}
                       for group_id, user_ids in kept.items()}}
    path = tmp_path / "faceset.yaml"
    path.write_text(yaml.safe_dump(main, sort_keys=False))
    with Session.for_manifest(str(path)) as session:  # without the fragment, u00 and u01 would be pruned
        removed = {(op.group_id, op.user_id) for op in session.plan().operations}
    assert {("staff", "u00"), ("staff", "u01"), ("visitors", "u00"), ("visitors", "u01")} <= removed

    done = _facesync(["export", "--target", f"local:{db}", "--user", "staff/u00", "--user", "staff/u01",
                      "--user", "visitors/u00", "--user", "visitors/u01", "-o", str(tmp_path / "adopted.yaml")],
                     env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Exported 0 groups, 2 users, 6 faces" in done.stderr  # u00: 1 face, u01: 2, each in two groups
    fragment = yaml.safe_load((tmp_path / "adopted.yaml").read_text())
    assert set(fragment) == {"people"}  # no version:, no target:, no group redefined
    assert fragment["people"]["u01"]["groups"] == ["staff", "visitors"]
    assert len(fragment["people"]["u01"]["images"]) == 2 and fragment["people"]["u01"]["user_info"] == "User 1"
    path.write_text(yaml.safe_dump({**main, "include": ["adopted.yaml"]}, sort_keys=False))

    with Session.for_manifest(str(path)) as session:
        plan = session.plan()
        assert plan.empty, [op.key for op in plan.operations]
    planned = _facesync(["plan", str(path)], env=env, timeout=60)
    assert planned.returncode == 0 and "No changes" in planned.stdout, planned.stdout + planned.stderr


def test_export_group_fragment_and_user_refusals(tmp_path):
    db = str(tmp_path / "lib.db")
    build_library(db)
    env = {**os.environ, "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    env.pop("FACESYNC_TARGET", None)

    done = _facesync(["export", "--target", f"local:{db}", "--group", "true", "--fragment"], env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(yaml.safe_load(done.stdout)) == {"groups"} and "Exported 1 group," in done.stderr
    (tmp_path / "true.yaml").write_text(done.stdout)
    (tmp_path / "faceset.yaml").write_text(f"version: 1\ntarget: 'local:{db}'\ninclude: [true.yaml]\n")
    with Session.for_manifest(str(tmp_path / "faceset.yaml")) as session:
        plan = session.plan()
        assert plan.empty, [op.key for op in plan.operations]

    for user, message in [("staff", "expected GROUP/USER"), ("staff/nobody", "no user nobody in group staff"),
                          ("007/u03", None)]:
        refused = _facesync(["export", "--target", f"local:{db}", "--user", user, "--user", "staff/u03"],
                            env=env, timeout=60)
        if message is None:  # u03 has other faces in 007 than in staff: one person cannot say both
            message = "has other faces or user_info"
        assert refused.returncode == 1 and message in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr


def test_export_leaves_out_facesync_s_own_groups(tmp_path):
    """A staging group left by an interrupted apply is facesync's, not data to adopt: the manifest could not
    even name it."""
    from facesync.model import STAGE_GROUP_PREFIX

    db = str(tmp_path / "lib.db")
    lib = LocalLibrary(db)
    try:
        for group_id in ("staff", STAGE_GROUP_PREFIX + "staff"):
            lib.group_add(group_id)
            lib.user_add(group_id, "alice", Image.from_bytes(png(7)), user_info="Alice")
        out = io.StringIO()
        stats = export_manifest(lib, out, target=f"local:{db}", concurrency=2, window=5)
    finally:
        lib.close()
    assert stats.groups == 1
    exported = yaml.safe_load(out.getvalue())
    assert list(exported["groups"]) == ["staff"]
    path = tmp_path / "exported.yaml"
    path.write_text(out.getvalue())
    manifest.load(str(path))  # valid as written
