"""Faces facesync cannot match: a service whose ``detect`` answers other face_tokens than user/add stores.

The library is built through one token cache (one machine), then planned through another that has never
seen it (a fresh CI runner): every face facesync did not upload itself is known to it only by ``detect``.
Lenient (tokens agree) and harsh (they differ) are both run explicitly, whatever ``--unknowns`` says.
"""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from facesync.api.protocol import CallRecord, Endpoint, Image
from facesync.cache import DetectAgreement, TokenCache
from facesync.errors import EXIT_UNSAFE, ConfigError, UnmatchedFacesError
from facesync.local.store import LocalLibrary
from facesync.model import PROBE_GROUP_PREFIX, is_own_group
from facesync.plan.planfile import dump_plan
from facesync.plan.render import render_markdown, render_text
from facesync.session import SavedPlan, Session
from facesync.snapshot import write_snapshot
from tests.support.cli import run_facesync
from tests.support.images import png

LENIENT, HARSH = "lenient", "harsh"
WRITES = {Endpoint.GROUP_ADD, Endpoint.GROUP_DELETE, Endpoint.USER_ADD, Endpoint.USER_UPDATE,
          Endpoint.USER_COPY, Endpoint.USER_DELETE, Endpoint.FACE_DELETE}
LAYOUT = {"alice": [1, 2], "bob": [3]}


def write_manifest(root, users: dict[str, list[int]]) -> str:
    (root / "faces").mkdir(exist_ok=True)
    lines = ["version: 1", "groups:", "  staff:", "    users:"]
    for user_id, seeds in users.items():
        for seed in seeds:
            (root / "faces" / f"{seed}.png").write_bytes(png(seed))
        lines.append(f"      {user_id}: {{images: [{', '.join(f'faces/{seed}.png' for seed in seeds)}]}}")
    path = root / "faceset.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


@pytest.fixture
def world(tmp_path):
    """(manifest, library path) of a library built from the manifest by another machine's token cache."""
    def build(variant: str, layout: dict[str, list[int]] = LAYOUT):
        manifest = write_manifest(tmp_path, layout)
        db = str(tmp_path / f"{variant}.db")
        with LocalLibrary(db, unknowns=variant) as library, TokenCache(tmp_path / "elsewhere.sqlite3") as cache, \
                Session(library, cache=cache, progress=False) as session:
            assert session.apply(manifest).ok
            assert session.plan(manifest).empty
        return manifest, db
    return build


def faces_of(library: LocalLibrary) -> dict[str, list[str]]:
    return {uid: sorted(f.face_token for f in library.face_getlist("staff", uid).faces)
            for uid in library.group_getusers("staff").ids}


def observed(library: LocalLibrary) -> list[CallRecord]:
    records: list[CallRecord] = []
    library.observers.append(records.append)
    return records


def test_where_tokens_differ_apply_checks_first_then_every_plan_stops_until_reupload(world, tmp_path):
    manifest, db = world(HARSH)
    with LocalLibrary(db, unknowns=HARSH) as library, TokenCache(tmp_path / "fresh.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        before = faces_of(library)
        records = observed(library)

        plan = session.plan(manifest)  # nothing known of the service yet: the plan says what it cannot tell
        assert plan.replaced_by_detect == (("staff", "alice"), ("staff", "bob"))
        assert not plan.reupload
        assert "apply checks that first, with one upload to a scratch group" in render_text(plan)
        assert "2 users (staff/alice, staff/bob)" in render_markdown(plan)
        assert json.loads(dump_plan(plan))["replaced_by_detect"] == {
            "users": [{"group_id": "staff", "user_id": "alice"}, {"group_id": "staff", "user_id": "bob"}],
            "reupload": False}
        assert not [r for r in records if r.endpoint in WRITES]  # planning writes nothing
        assert cache.detect_agreement() is None

        records.clear()
        with pytest.raises(UnmatchedFacesError, match="seen by apply's probe") as refused:
            session.apply(plan, force=True)
        assert refused.value.exit_code == EXIT_UNSAFE and "--reupload" in refused.value.hint
        assert faces_of(library) == before  # nothing of the user's was touched
        assert not any(is_own_group(gid) for gid in library.group_getlist().ids)  # the probe's group is gone
        probe = [r.endpoint for r in records if r.endpoint not in (Endpoint.GROUP_GETLIST, Endpoint.GROUP_GETUSERS,
                                                                    Endpoint.FACE_GETLIST)]
        assert probe.count(Endpoint.USER_ADD) == 1 and probe.count(Endpoint.DETECT) == 1
        assert cache.detect_agreement() is DetectAgreement.DIFFERENT

        with pytest.raises(UnmatchedFacesError, match=r"2 users \(staff/alice, staff/bob\)"):
            session.plan(manifest)  # now known: a plan stops at once

        replaced = session.plan(manifest, reupload=True, force=True)
        assert replaced.reupload and replaced.replaced_by_detect == (("staff", "alice"), ("staff", "bob"))
        assert "--reupload: the faces of 2 users" in render_text(replaced)
        result = session.apply(replaced, force=True)
        assert result.ok, result.failures
        after = faces_of(library)
        assert {uid: len(tokens) for uid, tokens in after.items()} == {"alice": 2, "bob": 1}
        assert session.plan(manifest).empty  # the uploads taught the cache the stored tokens
        assert cache.pending() == []  # every upload's answer was recorded


def test_where_tokens_agree_the_probe_lets_the_apply_run_once_and_is_remembered(world, tmp_path):
    manifest, db = world(LENIENT)
    write_manifest(tmp_path, {"alice": [1, 4], "bob": [3]})  # alice's second photo is replaced
    with LocalLibrary(db, unknowns=LENIENT) as library, TokenCache(tmp_path / "fresh.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        plan = session.plan(manifest)
        assert plan.replaced_by_detect == (("staff", "alice"),)
        records = observed(library)
        assert session.apply(plan).ok
        assert [r.endpoint for r in records].count(Endpoint.DETECT) == 1  # the probe's
        assert cache.detect_agreement() is DetectAgreement.EQUAL
        assert "apply's probe" in cache.detect_agreement_seen()
        assert not any(gid.startswith(PROBE_GROUP_PREFIX) for gid in library.group_getlist().ids)
        assert session.plan(manifest).empty

        write_manifest(tmp_path, {"alice": [1, 4], "bob": [5]})
        again = session.plan(manifest)
        assert again.replaced_by_detect == ()  # known to agree: nothing to check
        records.clear()
        assert session.apply(again).ok
        assert Endpoint.DETECT not in [r.endpoint for r in records]


def test_faces_the_cache_knows_as_other_uploads_are_replaced_without_doubt(world, tmp_path):
    manifest, db = world(HARSH)
    write_manifest(tmp_path, {"alice": [1, 6], "bob": [3]})
    with LocalLibrary(db, unknowns=HARSH) as library, TokenCache(tmp_path / "elsewhere.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        plan = session.plan(manifest)  # face 2 is known as the upload of photo 2: certainly not photo 6
        assert plan.replaced_by_detect == ()
        assert session.apply(plan).ok and session.plan(manifest).empty


def test_an_upload_of_a_detected_image_teaches_the_answer_for_free(world, tmp_path):
    manifest, db = world(LENIENT)
    write_manifest(tmp_path, {"alice": [1, 2, 7], "bob": [3]})  # alice gains a face, loses none
    with LocalLibrary(db, unknowns=LENIENT) as library, TokenCache(tmp_path / "fresh.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        plan = session.plan(manifest)
        assert plan.replaced_by_detect == ()
        assert session.apply(plan).ok
        assert cache.detect_agreement() is DetectAgreement.EQUAL
        assert cache.detect_agreement_seen().startswith("by an upload's answer")


def test_doctor_remembers_the_answer_for_plans(world, tmp_path):
    manifest, db = world(HARSH)
    with LocalLibrary(db, unknowns=HARSH) as library, TokenCache(tmp_path / "fresh.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        session.doctor([png(99, size=4)])
        assert cache.detect_agreement() is DetectAgreement.DIFFERENT
        records = observed(library)
        with pytest.raises(UnmatchedFacesError, match="seen by facesync doctor"):
            session.plan(manifest)
        assert not [r for r in records if r.endpoint in WRITES]


def test_a_saved_plan_is_checked_where_it_is_applied_and_reupload_needs_a_new_plan(world, tmp_path):
    manifest, db = world(HARSH)
    with LocalLibrary(db, unknowns=HARSH) as library, TokenCache(tmp_path / "ci.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        saved = SavedPlan(session.plan(manifest, force=True))
        with pytest.raises(ConfigError, match="--reupload goes with a manifest"):
            session.apply(saved, reupload=True)
    with LocalLibrary(db, unknowns=HARSH) as library, TokenCache(tmp_path / "laptop.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        before = faces_of(library)
        with pytest.raises(UnmatchedFacesError):
            session.apply(saved, force=True)
        assert faces_of(library) == before


def test_the_command_line_stops_with_the_reason_and_goes_on_with_reupload(world, tmp_path):
    manifest, db = world(HARSH)
    env = {"FACESYNC_CACHE_DIR": str(tmp_path / "cli-cache"), "FACESYNC_UNKNOWNS": HARSH}
    target = f"local:{db}"

    def run(*args: str):
        return run_facesync(*args, "--target", target, env={**os.environ, **env})

    applied = run("apply", manifest, "--yes", "--force")
    assert applied.returncode == EXIT_UNSAFE, applied.stderr
    assert "cannot match the manifest's images" in applied.stderr and "Traceback" not in applied.stderr
    planned = run("plan", manifest, "--format", "json")
    assert planned.returncode == EXIT_UNSAFE and "hint:" in planned.stderr and "--reupload" in planned.stderr
    reupload = run("plan", manifest, "--reupload", "--format", "json")
    assert reupload.returncode == 0, reupload.stderr
    assert json.loads(reupload.stdout)["replaced_by_detect"]["reupload"] is True
    assert run("apply", manifest, "--yes", "--force", "--reupload").returncode == 0
    final = run("plan", manifest, "--detailed-exitcode")
    assert final.returncode == 0, final.stdout + final.stderr


def test_an_upload_whose_answer_a_crash_lost_is_named_by_its_note(world, tmp_path):
    manifest, db = world(HARSH)
    write_manifest(tmp_path, {"alice": [1, 2, 8], "bob": [3, 9]})
    sha = {seed: hashlib.sha256(png(seed)).hexdigest() for seed in (8, 9)}
    with LocalLibrary(db, unknowns=HARSH) as library, TokenCache(tmp_path / "elsewhere.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        # what an apply killed between user/add and recording its answer leaves: the note and the face
        cache.record_pending(sha[8], "staff", "alice")
        library.user_add("staff", "alice", Image.from_bytes(png(8)))
        # and a note of an upload that never landed
        cache.record_pending(sha[9], "staff", "bob")
        plan = session.plan(manifest)
        assert [(op.kind.value, op.user_id) for op in plan.operations] == [("add_face", "bob")]
        assert plan.replaced_by_detect == ()
        assert cache.pending() == []  # both notes settled: alice's face named, bob has nothing to explain
        assert session.apply(plan).ok and session.plan(manifest).empty


def test_two_unrecorded_faces_of_one_user_are_not_guessed(world, tmp_path):
    manifest, db = world(HARSH)
    write_manifest(tmp_path, {"alice": [1, 2, 8, 9], "bob": [3]})
    with LocalLibrary(db, unknowns=HARSH) as library, TokenCache(tmp_path / "elsewhere.sqlite3") as cache, \
            Session(library, cache=cache, progress=False) as session:
        for seed in (8, 9):
            cache.record_pending(hashlib.sha256(png(seed)).hexdigest(), "staff", "alice")
            library.user_add("staff", "alice", Image.from_bytes(png(seed)))
        plan = session.plan(manifest)  # which face is which photo? the plan does not pretend to know
        assert plan.replaced_by_detect == (("staff", "alice"),)
        assert len(cache.pending()) == 2


def test_a_snapshot_keeps_which_tokens_were_only_detected_so_offline_plans_name_the_users(
        world, tmp_path, monkeypatch):
    manifest, db = world(HARSH)
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "ci-cache"))
    snapshot_file = str(tmp_path / "live.json")
    with LocalLibrary(db, unknowns=HARSH) as library, Session(library, progress=False) as session:
        write_snapshot(session.snapshot(manifest), snapshot_file)
    assert len(json.loads((tmp_path / "live.json").read_text())["detected"]) == 3  # photos 1, 2 and 3
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "fork-cache"))  # a fork's runner: no cache
    with Session.offline(snapshot_file) as offline:
        plan = offline.plan(manifest, force=True)
    assert plan.replaced_by_detect == (("staff", "alice"), ("staff", "bob"))
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "ci-cache"))
    with LocalLibrary(db, unknowns=HARSH) as library, Session(library, progress=False) as session:
        before = faces_of(library)
        with pytest.raises(UnmatchedFacesError, match="seen by apply's probe"):
            session.apply(SavedPlan(plan), force=True)
        assert faces_of(library) == before
