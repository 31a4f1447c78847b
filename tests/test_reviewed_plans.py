"""What a reviewer approves is what runs, and what a reviewer sees is all of it: through the command line,
against the local library and ``facesync serve``."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings

from facesync.local.store import LocalLibrary
from facesync.plan import planfile
from tests.support import images
from tests.support.cli import run_facesync
from tests.test_apply import seed_library, snapshot, token_of
from tests.test_apply_faults import remember_seeded, write_faults, write_manifest
from tests.test_planner_properties import live_of, scenarios


def facesync(*args: str, cwd=None, env: dict | None = None, cache=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("NO_COLOR", None)
    if env is None or "FACESYNC_TARGET" not in env:
        environment.pop("FACESYNC_TARGET", None)
    if cache is not None:
        environment["FACESYNC_CACHE_DIR"] = str(cache)
    return run_facesync(*args, cwd=cwd, env=environment)


# ---- filters ---------------------------------------------------------------------------------------------


def test_filters_name_groups_outside_them_and_refuse_matching_nothing(tmp_path):
    manifest = write_manifest(tmp_path, {"staff": {"alice": ([1], ""), "bob": ([2], "")},
                                         "visitors": {"dave": ([3], "")}})
    target = f"local:{tmp_path / 'lib.db'}"
    with LocalLibrary(str(tmp_path / "lib.db")) as library:
        seed_library(library, {"staff": {"alice": ([1], "")}, "visitors": {"dave": ([3], "")},
                               "archive": {"old": ([9], "")}})
    done = facesync("plan", manifest, "--target", target, "--group", "visitors", cache=tmp_path / "c")
    assert done.returncode == 0, done.stderr
    assert "of the manifest outside --group left alone: staff" in done.stdout
    assert "not in the manifest left alone: archive" in done.stdout
    assert "staff" not in done.stdout.split("not in the manifest")[1]

    for args, named in ((("--group", "staff", "--user", "dave"), "it is in group visitors"),
                        (("--group", "nosuch"), "no such group"),
                        (("--user", "nobody"), "no group of the manifest has this user")):
        refused = facesync("plan", manifest, "--target", target, *args, cache=tmp_path / "c")
        assert refused.returncode == 1, refused.stdout
        assert named in refused.stderr and "No changes" not in refused.stdout
        assert "groups staff, visitors" in refused.stderr  # what exists, to choose from
        assert "Traceback" not in refused.stderr


# ---- truthful summaries ----------------------------------------------------------------------------------


@pytest.mark.both_unknowns
def test_after_a_failure_apply_says_what_was_verified_and_what_was_not(serve, tmp_path):
    faults = {"reject_images": [{"face_token": token_of(50), "code": 223120}]}
    db = str(tmp_path / "served.db")
    with LocalLibrary(db) as library:
        seed_library(library, {"g": {"u": ([1, 2], ""), "other": ([3], "")}})
    server = serve("--faults", write_faults(tmp_path, faults), db=db)
    remember_seeded(server, {"g": {"u": ([1, 2], ""), "other": ([3], "")}}, tmp_path / "c")  # as if facesync built it
    manifest = write_manifest(tmp_path, {"g": {"u": ([1, 50], ""), "other": ([4], ""), "new": ([5], "")}})
    report = tmp_path / "report.json"
    done = facesync("apply", manifest, "--yes", "--verify", "full", "--report", str(report), env=server.env(),
                    cache=tmp_path / "c")
    assert done.returncode == 1, done.stderr
    assert re.search(r"\b1 failed, [1-9]\d* skipped", done.stdout)  # u's add, and what waited on it
    assert "the library holds what the plan wanted" not in done.stdout
    assert "Verified: what the operations that succeeded did" in done.stdout
    assert "Not verified, and not as the plan wants (1 with a failed or skipped operation): g/u." in done.stdout
    verification = json.loads(report.read_text())["verification"]
    assert verification["ok"] is False and verification["not_verified"] == ["g/u"]

    unverified = facesync("apply", manifest, "--yes", "--verify", "off", env=server.env(), cache=tmp_path / "c")
    assert "Not verified: --verify off" in unverified.stdout and "Verified:" not in unverified.stdout


# ---- portable, pinned plan files -------------------------------------------------------------------------

MANIFEST = """\
version: 1
policy:
  protected_groups: [vip]
groups:
  staff:
    users:
      alice: {user_info: Alice, images: [faces/alice.png]}
      bob: {images: [faces/bob.png]}
  vip:
    prune: false
    users:
      carol: {images: [faces/carol.png]}
"""


def checkout(folder: Path, manifest: str = MANIFEST, *, git: bool = True) -> Path:
    """A repository with the manifest under deploy/ and its photos, committed; returns the manifest."""
    faces = folder / "deploy" / "faces"
    faces.mkdir(parents=True)
    for name, seed in (("alice", 1), ("bob", 2), ("carol", 3)):
        (faces / f"{name}.png").write_bytes(images.png(seed))
    (folder / "deploy" / "faceset.yaml").write_text(manifest)
    if git:
        for args in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@example.com",
                                                    "commit", "-qm", "faces"]):
            subprocess.run(["git", "-C", str(folder), *args], check=True, capture_output=True)
    return folder / "deploy" / "faceset.yaml"


def head(folder: Path) -> str:
    return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], check=True, capture_output=True,
                          text=True).stdout.strip()


def library_state(db: Path) -> dict:
    with LocalLibrary(str(db)) as library:
        groups = library.group_getlist().ids
        return {group: snapshot(library, [group])[group] for group in groups}


@pytest.mark.both_unknowns
def test_plan_in_one_checkout_apply_from_a_moved_copy(tmp_path):
    first = tmp_path / "runner1" / "repo"
    manifest = checkout(first)
    target = f"local:{tmp_path / 'lib.db'}"
    made = facesync("plan", "deploy/faceset.yaml", "--target", target, "--format", "markdown", "--out",
                    str(tmp_path / "plan.json"), cwd=first, cache=tmp_path / "c1")
    assert made.returncode == 0, made.stderr
    assert f"`deploy/faceset.yaml` at commit `{head(first)}`" in made.stdout
    assert "changes not in commit" not in made.stdout  # a clean checkout
    document = json.loads((tmp_path / "plan.json").read_text())
    assert document["manifest"] == "deploy/faceset.yaml"
    uploads = [op["face"] for op in document["operations"] if op["face"]]
    assert {face["source"] for face in uploads} == {"faces/alice.png", "faces/bob.png", "faces/carol.png"}
    assert all(face["sha256"] == hashlib.sha256((manifest.parent / face["source"]).read_bytes()).hexdigest()
               for face in uploads)
    assert str(tmp_path) not in json.dumps(document["operations"])  # no absolute path in what runs

    second = tmp_path / "runner2" / "work" / "repo"
    shutil.copytree(first, second)
    shutil.rmtree(tmp_path / "runner1")  # the first job's checkout is gone
    applied = facesync("apply", str(tmp_path / "plan.json"), cwd=second / "deploy", cache=tmp_path / "c2")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert f"relative to {second / 'deploy'}, the manifest's folder in {second} (git checkout)" in applied.stderr
    assert "Verified: the library holds what the plan wanted" in applied.stdout
    state = library_state(tmp_path / "lib.db")
    assert set(state) == {"staff", "vip"} and set(state["staff"]) == {"alice", "bob"}


def test_a_copy_of_the_checkout_applies_to_its_own_library_not_the_original(tmp_path):
    first = tmp_path / "first"
    checkout(first)
    made = facesync("plan", "deploy/faceset.yaml", "--out", str(tmp_path / "plan.json"), cwd=first,
                    cache=tmp_path / "c")  # the default target: .facesync/library.db in this checkout
    assert made.returncode == 0, made.stderr
    assert json.loads((tmp_path / "plan.json").read_text())["target"] == "local:.facesync/library.db"
    shown = facesync("show", str(tmp_path / "plan.json"), cwd=first)
    assert f"Target: local:{first / '.facesync' / 'library.db'} " in shown.stdout  # as plan printed it

    second = tmp_path / "second"
    shutil.copytree(first, second)
    applied = facesync("apply", str(tmp_path / "plan.json"), cwd=second / "deploy", cache=tmp_path / "c")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert (f"Library: local:{second / '.facesync' / 'library.db'}, the plan's local:.facesync/library.db in "
            f"{second} (git checkout)") in applied.stderr
    assert set(library_state(second / ".facesync" / "library.db")["staff"]) == {"alice", "bob"}
    assert not (first / ".facesync" / "library.db").exists()  # planning created nothing, applying wrote here

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.rmtree(first)
    nowhere = facesync("apply", str(tmp_path / "plan.json"), cwd=elsewhere, cache=tmp_path / "c")
    assert nowhere.returncode == 1 and "faces/alice.png: missing" in nowhere.stderr, nowhere.stderr
    assert not (elsewhere / ".facesync").exists()  # refused before a library is opened anywhere


def test_chdir_names_the_checkout_and_a_plan_without_one_is_refused_naming_each_image(tmp_path):
    repo = tmp_path / "repo"
    checkout(repo, git=False)
    target = f"local:{tmp_path / 'lib.db'}"
    assert facesync("plan", "deploy/faceset.yaml", "--target", target, "--out", "plan.json", cwd=repo,
                    cache=tmp_path / "c").returncode == 0
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.move(str(repo / "plan.json"), elsewhere / "plan.json")
    shutil.move(str(repo), tmp_path / "moved")  # the folder the plan was made in is gone
    missing = facesync("apply", "plan.json", cwd=elsewhere, cache=tmp_path / "c")
    assert missing.returncode == 1
    for name in ("faces/alice.png", "faces/bob.png", "faces/carol.png"):
        assert f"  - {name}: missing" in missing.stderr
    assert "--chdir" in missing.stderr and library_state(tmp_path / "lib.db") == {}
    chdir = facesync("apply", "plan.json", "--chdir", str(tmp_path / "moved"), cwd=elsewhere, cache=tmp_path / "c")
    assert chdir.returncode == 0, chdir.stderr
    assert f"the manifest's folder in {tmp_path / 'moved'} (--chdir)" in chdir.stderr


@pytest.mark.both_unknowns
@pytest.mark.parametrize("live", [False, True], ids=["online", "snapshot"])
def test_an_image_edited_after_planning_is_refused_before_any_write(tmp_path, live):
    repo = tmp_path / "repo"
    manifest = checkout(repo)
    db = tmp_path / "lib.db"
    with LocalLibrary(str(db)) as library:
        seed_library(library, {"staff": {"alice": ([1], "Alice")}})
    env = {"FACESYNC_TARGET": f"local:{db}"}
    if live:
        assert facesync("snapshot", str(manifest), "--out", str(tmp_path / "live.json"), env=env,
                        cache=tmp_path / "c").returncode == 0
        made = facesync("plan", "deploy/faceset.yaml", "--live", str(tmp_path / "live.json"), "--out", "plan.json",
                        cwd=repo, cache=tmp_path / "c")
    else:
        made = facesync("plan", "deploy/faceset.yaml", "--out", "plan.json", cwd=repo, env=env, cache=tmp_path / "c")
    assert made.returncode == 0, made.stderr
    before = library_state(db)
    (manifest.parent / "faces" / "bob.png").write_bytes(images.png(40))  # another photo, same name
    (manifest.parent / "faces" / "carol.png").unlink()
    refused = facesync("apply", "plan.json", cwd=repo, env=env, cache=tmp_path / "c")
    assert refused.returncode == 1
    assert "  - faces/bob.png: differs from the reviewed image" in refused.stderr
    assert "  - faces/carol.png: missing" in refused.stderr
    assert "alice.png" not in refused.stderr  # unchanged, not uploaded anyway
    assert library_state(db) == before


# ---- a reviewer sees all of it ---------------------------------------------------------------------------


def test_a_300_operation_plan_lists_every_delete_in_markdown(serve, tmp_path):
    db = tmp_path / "served.db"
    with LocalLibrary(str(db)) as library:
        seed_library(library, {"g": {f"old{i:03d}": ([1000 + i], "") for i in range(150)}})
    server = serve(db=str(db))
    manifest = write_manifest(tmp_path, {"g": {f"new{i:03d}": ([i], "") for i in range(150)}})
    done = facesync("plan", manifest, "--format", "markdown", "--qps", "1000", env=server.env(),
                    cache=tmp_path / "c")
    assert done.returncode == 0, done.stderr
    assert "| 150 | 0 | 150 | 300 |" in done.stdout
    assert all(f"-   user old{i:03d}  # user not in manifest" in done.stdout for i in range(150))
    assert done.stdout.index("-   user old149") < done.stdout.index("<details>")
    assert len(done.stdout) < 65_536


def test_show_prints_a_saved_plan_byte_for_byte_as_plan_did(tmp_path):
    repo = tmp_path / "repo"
    manifest = checkout(repo)
    target = f"local:{tmp_path / 'lib.db'}"
    assert facesync("apply", "deploy/faceset.yaml", "--target", target, "--yes", cwd=repo,
                    cache=tmp_path / "c").returncode == 0
    (manifest.parent / "faces" / "bob2.png").write_bytes(images.png(22))
    manifest.write_text(MANIFEST.replace("faces/bob.png", "faces/bob2.png").replace("Alice", "Alice \u202e Z"))
    for fmt in ("text", "json", "markdown"):
        made = facesync("plan", "deploy/faceset.yaml", "--target", target, "--format", fmt, "--out",
                        f"plan-{fmt}.json", cwd=repo, cache=tmp_path / "c")
        assert made.returncode == 0, made.stderr
        shown = facesync("show", str(repo / f"plan-{fmt}.json"), "--format", fmt, cwd=tmp_path)
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout == made.stdout
    text = facesync("show", str(repo / "plan-text.json"), cwd=tmp_path).stdout
    assert f"Note: the manifest's folder has changes not in commit {head(repo)[:12]}" in text
    assert "- face faces/bob.png (" in text  # the removed face, named by the photo it came from
    assert "\u202e" not in text and "Alice \\u202e Z" in text


# ---- an edited and re-signed plan ------------------------------------------------------------------------


def resign(path: Path, edit) -> None:
    document = json.loads(path.read_text())
    edit(document)
    document["checksum"] = planfile.checksum(document)
    path.write_text(json.dumps(document))


@pytest.mark.both_unknowns
def test_a_re_signed_plan_cannot_delete_a_protected_group(tmp_path):
    repo = tmp_path / "repo"
    checkout(repo)
    db = tmp_path / "lib.db"
    target = f"local:{db}"
    assert facesync("apply", "deploy/faceset.yaml", "--target", target, "--yes", cwd=repo,
                    cache=tmp_path / "c").returncode == 0
    (repo / "deploy" / "faces" / "dave.png").write_bytes(images.png(4))
    (repo / "deploy" / "faceset.yaml").write_text(MANIFEST + "      dave: {images: [faces/dave.png]}\n")
    assert facesync("plan", "deploy/faceset.yaml", "--target", target, "--out", "plan.json", cwd=repo,
                    cache=tmp_path / "c").returncode == 0

    def delete_vip(document):
        document["protected_groups"] = []
        document["operations"].append({**document["operations"][-1], "index": len(document["operations"]),
                                       "kind": "delete_group", "key": "delete_group:vip:::", "group_id": "vip",
                                       "user_id": None, "face": None, "after": [], "expects": [],
                                       "user_info": None, "reason": "group not in manifest"})

    resign(repo / "plan.json", delete_vip)
    refused = facesync("apply", "plan.json", "--force", cwd=repo, cache=tmp_path / "c")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "protected group vip" in refused.stderr
    assert "vip" in library_state(db) and "dave" not in library_state(db)["vip"]


@pytest.mark.both_unknowns
def test_a_re_signed_plan_cannot_skip_force(tmp_path):
    many = MANIFEST.replace("      bob: {images: [faces/bob.png]}\n",
                            "".join(f"      u{i}: {{images: [faces/u{i}.png]}}\n" for i in range(12)))
    repo = tmp_path / "repo"
    manifest = checkout(repo, many, git=False)
    for i in range(12):
        (manifest.parent / "faces" / f"u{i}.png").write_bytes(images.png(100 + i))
    db = tmp_path / "lib.db"
    target = f"local:{db}"
    assert facesync("apply", "deploy/faceset.yaml", "--target", target, "--yes", cwd=repo,
                    cache=tmp_path / "c").returncode == 0
    manifest.write_text(MANIFEST)  # u0..u11 go: 12 of 15 users and faces
    made = facesync("plan", "deploy/faceset.yaml", "--target", target, "--out", "plan.json", "--detailed-exitcode",
                    cwd=repo, cache=tmp_path / "c")
    assert made.returncode == 3, made.stderr

    def looks_safe(document):
        document["safety"].update(unsafe=False, reasons=[], forced=True, existing=10_000, max_share=1.0)

    resign(repo / "plan.json", looks_safe)
    refused = facesync("apply", "plan.json", cwd=repo, cache=tmp_path / "c")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "--force" in refused.stderr and "unsafe" in refused.stdout
    assert len(library_state(db)["staff"]) == 13
    forced = facesync("apply", "plan.json", "--force", cwd=repo, cache=tmp_path / "c")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert set(library_state(db)["staff"]) == {"alice", "bob"}


@pytest.mark.parametrize("source", ["/etc/passwd", "../outside.png", "faces/link.png", "faces/../../outside.png"])
def test_a_re_signed_plan_cannot_read_outside_its_folder(tmp_path, source):
    repo = tmp_path / "repo"
    manifest = checkout(repo, git=False)
    outside = tmp_path / "outside.png"
    outside.write_bytes(images.png(66))
    (manifest.parent / "faces" / "link.png").symlink_to(outside)
    target = f"local:{tmp_path / 'lib.db'}"
    assert facesync("plan", "deploy/faceset.yaml", "--target", target, "--out", "plan.json", cwd=repo,
                    cache=tmp_path / "c").returncode == 0
    secret = Path(source) if source.startswith("/") else outside

    def point_outside(document):
        face = next(op["face"] for op in document["operations"] if op["face"])
        face["source"] = source
        face["sha256"] = hashlib.sha256(secret.read_bytes()).hexdigest()

    resign(repo / "plan.json", point_outside)
    refused = facesync("apply", "plan.json", cwd=repo, cache=tmp_path / "c")
    assert refused.returncode == 1
    assert f"  - {source}: " in refused.stderr
    assert "not a path inside the manifest's folder" in refused.stderr or "leads outside" in refused.stderr
    assert library_state(tmp_path / "lib.db") == {}


# ---- the pieces under the command line ------------------------------------------------------------------


def test_the_executor_uploads_only_the_reviewed_bytes(library, tmp_path):
    from facesync import apply
    from facesync.model import ImageKind
    from facesync.plan.ops import FaceSource, Operation, OpKind, Plan

    photo = tmp_path / "bob.png"
    photo.write_bytes(images.png(2))
    reviewed = hashlib.sha256(images.png(2)).hexdigest()
    face = FaceSource(ImageKind.FILE, "bob.png", str(photo), sha256=reviewed)
    plan = Plan((Operation(OpKind.CREATE_GROUP, "g"), Operation(OpKind.ADD_FACE, "g", "bob", face=face, after=(0,))),
                target=library.identity)
    photo.write_bytes(images.png(3))  # changed between the checks and the upload
    result = apply.execute(plan, library)
    assert [r.outcome for r in result.results] == [apply.DONE, apply.FAILED]
    assert "bob.png changed after the plan was made" in result.results[1].error_msg
    assert library.group_getusers("g").ids == ()


def test_removed_faces_are_named_from_the_manifest_and_the_cache(tmp_path):
    from facesync.cache import TokenCache
    from facesync.model import Desired, DesiredGroup, DesiredImage, DesiredUser, ImageKind, Origin
    from facesync.plan.ops import Expect, Operation, OpKind, Plan
    from facesync.session import removed_face_names

    photo = tmp_path / "faces" / "old.png"
    photo.parent.mkdir()
    photo.write_bytes(images.png(5))
    cache = TokenCache(tmp_path / "tokens.sqlite3")
    cache.record_upload(hashlib.sha256(images.png(5)).hexdigest(), "t" * 32, str(photo))
    entry = DesiredImage(ImageKind.FACE_TOKEN, "e" * 32, face_token="e" * 32, origin=Origin("faceset.yaml", 12, 9))
    desired = Desired((DesiredGroup("g", (DesiredUser("other", (entry,)),)),), manifest_path=str(tmp_path / "m.yaml"))
    expect = Expect("g", "u", True, ("e" * 32, "t" * 32, "x" * 32))
    plan = Plan(tuple(Operation(OpKind.DELETE_FACE, "g", "u", face_token=token, expects=(expect,))
                      for token in ("e" * 32, "t" * 32, "x" * 32)), target="local:x")
    try:
        names = removed_face_names(plan, desired, cache, str(tmp_path))
    finally:
        cache.close()
    assert names == {"e" * 32: "face_token entry at faceset.yaml:12:9", "t" * 32: "faces/old.png"}


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_apply_counts_safety_as_the_planner_did(scenario):
    """With the manifest beside the plan, the recount from operations and library equals the planner's,
    except that a group that does not prune may hold faces beyond the manifest's that only a face read
    would count: there the recount is lower, so never less strict."""
    from facesync.plan.planner import make_plan
    from facesync.plan.trust import recount_safety, scope_groups

    state, desired, _ = scenario
    plan = make_plan(desired, live_of(state, desired), created_at="t")
    live_users = {gid: tuple(state[gid]) for gid in scope_groups(plan, desired) if gid in state}
    recount = recount_safety(plan, live_users, desired, force=False)
    assert recount.deleting == plan.safety.deleting
    assert recount.existing <= plan.safety.existing
    if all(group.prune for group in desired.groups):
        assert recount.existing == plan.safety.existing
        assert recount.unsafe == plan.safety.unsafe
    assert recount.unsafe >= plan.safety.unsafe


def test_a_re_signed_plan_cannot_send_credentials_to_a_server_of_its_choosing(serve, tmp_path):
    repo = tmp_path / "repo"
    checkout(repo, git=False)
    assert facesync("plan", "deploy/faceset.yaml", "--target", f"local:{tmp_path / 'lib.db'}", "--out", "plan.json",
                    cwd=repo, cache=tmp_path / "c").returncode == 0
    attacker = serve()
    resign(repo / "plan.json", lambda document: document.update(target=f"{attacker.base_url} app 10000001"))
    keys = {key: value for key, value in attacker.env().items() if key.startswith("BAIDU_")}
    refused = facesync("apply", "plan.json", cwd=repo, env=keys, cache=tmp_path / "c")
    assert refused.returncode == 1
    assert f"the plan names the target {attacker.base_url}" in refused.stderr and "--target" in refused.stderr
    assert attacker.stats()["token_requests"] == 0
