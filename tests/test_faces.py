"""The local face check: real photos (tests/photos, see SOURCES.md) through the detector, ``validate`` and
``plan --check-faces`` as a user runs them, and ``facesync serve --detect-faces`` refusing what Baidu refuses."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facesync.faces.check import check_desired
from facesync.faces.detector import Detector, install_command
from facesync.faces.rules import MIN_FACE_PIXELS, FaceBox, FaceScan, Problem, emulator_refusal, findings
from facesync.local.store import LocalLibrary
from facesync.manifest import load
from tests.support.cli import run_facesync as facesync

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "photos"
QUICKSTART = ROOT / "examples" / "quickstart" / "faceset.yaml"


@pytest.fixture
def cache_env(tmp_path, monkeypatch):
    """A private cache folder for this test, for in-process calls and the processes it starts."""
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    import os

    return {**os.environ}


def folder_with(tmp_path: Path, manifest: str, photos: dict[str, str]) -> Path:
    """A manifest folder: ``photos`` maps a name under faces/ to a file of tests/photos."""
    (tmp_path / "faces").mkdir()
    for name, source in photos.items():
        shutil.copy(PHOTOS / source, tmp_path / "faces" / name)
    (tmp_path / "faceset.yaml").write_text(manifest)
    return tmp_path / "faceset.yaml"


# ---- the rules, on their own ----

def test_rules_name_each_problem_and_the_emulator_refuses_only_what_baidu_documents():
    face = FaceBox(10, 10, 100, 100)
    tiny = FaceBox(0, 0, MIN_FACE_PIXELS - 1, MIN_FACE_PIXELS - 1)
    assert findings(FaceScan(200, 200, (face,), 20)) == ()
    assert [f.problem for f in findings(FaceScan(200, 200, (), 20))] == [Problem.NO_FACE]
    assert [f.problem for f in findings(FaceScan(200, 200, (face, tiny), 20))] == [Problem.SEVERAL_FACES]
    assert [f.problem for f in findings(FaceScan(200, 200, (tiny,), 20))] == [Problem.SMALL_FACE]
    assert [f.problem for f in findings(FaceScan(0, 0, (), 20, decodable=False))] == [Problem.UNREADABLE]
    # a big image is searched shrunk: the message says which faces were not looked for
    assert "faces under 100 px are not looked for" in findings(FaceScan(2000, 2000, (), 100))[0].message
    assert emulator_refusal(FaceScan(200, 200, (), 20)) == 222202
    assert emulator_refusal(FaceScan(200, 200, (tiny,), 20)) == 222202
    assert emulator_refusal(FaceScan(200, 200, (face, tiny), 20)) is None  # several faces: accepted
    assert emulator_refusal(FaceScan(0, 0, (), 20, decodable=False)) == 222203


# ---- the detector on real photos ----

@pytest.mark.parametrize(("photo", "faces", "large_enough"), [
    ("face_a.jpg", 1, True), ("face_b.jpg", 1, True), ("face_c.jpg", 1, True),
    ("group.jpg", 2, True), ("small_face.jpg", 1, False), ("no_face.jpg", 0, None),
])
def test_detector_sees_what_the_test_photos_show(photo, faces, large_enough):
    scan = Detector().scan((PHOTOS / photo).read_bytes())
    assert len(scan.faces) == faces
    if faces:
        assert (min(box.side for box in scan.faces) >= MIN_FACE_PIXELS) is large_enough


def test_every_quickstart_photo_shows_one_face_large_enough():
    detector = Detector()
    photos = sorted((QUICKSTART.parent / "faces").glob("*.jpg"))
    assert len(photos) == 6
    for photo in photos:
        scan = detector.scan(photo.read_bytes())
        assert len(scan.faces) == 1, photo.name
        assert scan.faces[0].side >= MIN_FACE_PIXELS, photo.name


def test_synthetic_bytes_that_only_look_like_an_image_are_reported_undecodable():
    from tests.support import images

    assert not Detector().scan(images.jpeg(1)).decodable


# ---- validate --check-faces ----

MANIFEST = """version: 1
groups:
  staff:
    users:
      alice:
        images: [faces/alice.jpg]
      nina:
        images:
          - faces/nina.jpg
          - faces/coffee.jpg
      team:
        images: [faces/team.jpg]
      tiny:
        images: [faces/tiny.jpg]
"""
PHOTOS_OF_MANIFEST = {"alice.jpg": "face_a.jpg", "nina.jpg": "face_b.jpg", "coffee.jpg": "no_face.jpg",
                      "team.jpg": "group.jpg", "tiny.jpg": "small_face.jpg"}


def test_validate_check_faces_warns_at_file_line_and_strict_makes_errors(tmp_path, cache_env):
    folder_with(tmp_path, MANIFEST, PHOTOS_OF_MANIFEST)
    plain = facesync("validate", "faceset.yaml", cwd=tmp_path, env=cache_env)
    assert plain.returncode == 0 and "warning" not in plain.stderr  # no face check unless asked

    warned = facesync("validate", "faceset.yaml", "--check-faces", cwd=tmp_path, env=cache_env)
    assert warned.returncode == 0, warned.stderr
    assert warned.stdout.startswith("manifest OK: 1 group, 4 users, 5 faces (3 warnings)")
    lines = warned.stderr.splitlines()
    assert "faceset.yaml:10:13: warning: faces/coffee.jpg: no face found (at groups.staff.users.nina)" in lines
    assert "faceset.yaml:12:18: warning: faces/team.jpg: 2 faces found, one expected (at groups.staff.users.team)" \
        in lines
    small = [line for line in lines if line.startswith("faceset.yaml:14:18: warning: faces/tiny.jpg: the face is ")]
    assert len(small) == 1 and small[0].endswith(f"under {MIN_FACE_PIXELS}×{MIN_FACE_PIXELS} (at groups.staff.users.tiny)")
    assert "alice.jpg" not in warned.stderr and "nina.jpg" not in warned.stderr

    strict = facesync("validate", "faceset.yaml", "--check-faces", "--strict", "--format", "json", cwd=tmp_path,
                      env=cache_env)
    assert strict.returncode == 1
    import json

    report = json.loads(strict.stdout)
    assert report["valid"] is False
    assert sorted((d["severity"], d["line"]) for d in report["diagnostics"]) == [
        ("error", 10), ("error", 12), ("error", 14)]


def test_a_photo_shared_by_two_groups_is_reported_once_at_its_line(tmp_path):
    manifest = folder_with(tmp_path, "version: 1\ngroups:\n  staff: {users: {}}\n  night: {users: {}}\n"
                                     "people:\n  judy:\n    groups: [staff, night]\n"
                                     "    images: [faces/cup.jpg, faces/judy.jpg]\n",
                           {"cup.jpg": "no_face.jpg", "judy.jpg": "face_a.jpg"})
    found, stats = check_desired(load(str(manifest)).desired, cache_directory=tmp_path / "cache")
    assert stats.images == 2
    assert [(d.line, d.message) for d in found] == [(8, "faces/cup.jpg: no face found")]


def test_second_check_scans_nothing_and_reads_no_image(tmp_path):
    manifest = folder_with(tmp_path, MANIFEST, PHOTOS_OF_MANIFEST)
    cache = tmp_path / "cache"
    first, first_stats = check_desired(load(str(manifest)).desired, cache_directory=cache)
    assert first_stats.images == 5 and first_stats.scanned == 5
    # unchanged files are known by (path, size, mtime): the second check needs neither their bytes nor a scan
    desired = load(str(manifest), hash_images=False).desired
    second, second_stats = check_desired(desired, cache_directory=cache)
    assert second_stats.scanned == 0
    assert second == first
    # a changed photo is scanned again, and only it
    shutil.copy(PHOTOS / "face_c.jpg", tmp_path / "faces" / "coffee.jpg")
    third, third_stats = check_desired(load(str(manifest)).desired, cache_directory=cache)
    assert third_stats.scanned == 1
    assert not any("coffee.jpg" in d.message for d in third)


def test_plan_check_faces_strict_stops_before_any_call(tmp_path, cache_env):
    folder_with(tmp_path, MANIFEST, PHOTOS_OF_MANIFEST)
    db = tmp_path / "lib.db"
    stopped = facesync("plan", "faceset.yaml", "--check-faces", "--strict", "--target", f"local:{db}",
                       cwd=tmp_path, env=cache_env)
    assert stopped.returncode == 1
    assert "faceset.yaml:10:13: error: faces/coffee.jpg: no face found" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert not db.exists()  # stopped before the target was even opened
    planned = facesync("plan", "faceset.yaml", "--check-faces", "--target", f"local:{db}", cwd=tmp_path,
                       env=cache_env)
    assert planned.returncode == 0, planned.stderr
    assert "faces/coffee.jpg: no face found" in planned.stderr
    assert "Plan: 5 to add" in planned.stdout  # the group and its 4 users


def test_without_the_detector_the_flags_fail_with_the_install_command(tmp_path, cache_env):
    manifest = folder_with(tmp_path, MANIFEST, PHOTOS_OF_MANIFEST)
    blocked = "import sys; sys.modules['cv2'] = None; from facesync.cli import main; sys.argv[0] = 'facesync'; main()"
    for args in (["validate", str(manifest), "--check-faces"], ["plan", str(manifest), "--check-faces"],
                 ["serve", "--db", str(tmp_path / "s.db"), "--port", "0", "--detect-faces"]):
        done = subprocess.run([sys.executable, "-c", blocked, *args], check=False, capture_output=True, text=True,
                              cwd=tmp_path, env=cache_env, timeout=60)
        assert done.returncode == 1, args
        assert install_command() in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    assert install_command().startswith("pip install '") and install_command().endswith("[faces]'")


# ---- facesync serve --detect-faces, end to end ----

def faces_of(db: str, group_id: str, user_id: str) -> set[str] | None:
    with LocalLibrary(db) as library:
        if user_id not in library.group_getusers(group_id).ids:
            return None
        return {face.face_token for face in library.face_getlist(group_id, user_id).faces}


def test_apply_without_check_meets_222202_and_the_users_keep_their_faces(tmp_path, serve, cache_env):
    server = serve("--detect-faces")
    env = {**server.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    start = folder_with(tmp_path, "version: 1\ngroups:\n  staff:\n    users:\n"
                                  "      bob:\n        images: [faces/bob.jpg]\n",
                        {"bob.jpg": "face_b.jpg", "nina.jpg": "face_a.jpg", "coffee.jpg": "no_face.jpg"})
    built = facesync("apply", str(start), "--yes", cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr
    bob_before = faces_of(server.db, "staff", "bob")
    assert len(bob_before) == 1

    # a new user whose second photo has no face: user/add is the first call to see it
    start.write_text("version: 1\ngroups:\n  staff:\n    users:\n"
                     "      bob:\n        images: [faces/bob.jpg]\n"
                     "      nina:\n        images: [faces/nina.jpg, faces/coffee.jpg]\n")
    failed = facesync("apply", str(start), "--yes", cwd=tmp_path, env=env)
    assert failed.returncode == 1
    assert "222202" in failed.stderr + failed.stdout
    assert "Traceback" not in failed.stderr
    nina = faces_of(server.db, "staff", "nina")
    assert nina is not None and len(nina) == 1  # the photo with a face went in; the other was refused
    assert faces_of(server.db, "staff", "bob") == bob_before

    # an existing user's photo replaced by one without a face: detect refuses it at plan time, nothing changes
    start.write_text("version: 1\ngroups:\n  staff:\n    users:\n"
                     "      bob:\n        images: [faces/coffee.jpg]\n"
                     "      nina:\n        images: [faces/nina.jpg]\n")
    stopped = facesync("apply", str(start), "--yes", cwd=tmp_path, env=env)
    assert stopped.returncode == 1
    assert "faces/coffee.jpg refused by detect: Baidu error 222202" in stopped.stderr
    assert faces_of(server.db, "staff", "bob") == bob_before  # never left without its face
    assert faces_of(server.db, "staff", "nina") == nina

    refused = facesync("validate", str(start), "--check-faces", "--strict", cwd=tmp_path, env=env)
    assert refused.returncode == 1
    assert "faces/coffee.jpg: no face found" in refused.stderr


def test_emulator_refuses_a_small_face_and_accepts_a_group_photo(tmp_path, serve):
    from facesync.api.baidu import BaiduClient
    from facesync.api.errors import ImageRejectedError
    from facesync.api.protocol import Image

    server = serve("--detect-faces")
    client = BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None)
    try:
        client.group_add("staff")

        def add(user_id: str, photo: str):
            return client.user_add("staff", user_id, Image.from_bytes((PHOTOS / photo).read_bytes()))

        with pytest.raises(ImageRejectedError) as small:
            add("tiny", "small_face.jpg")
        assert small.value.error_code == 222202
        with pytest.raises(ImageRejectedError) as none:
            add("cup", "no_face.jpg")
        assert none.value.error_code == 222202
        added = add("team", "group.jpg")  # Baidu documents no refusal for several faces
        assert len(added.face_token) == 32
        assert add("alice", "face_a.jpg").face_token != added.face_token
    finally:
        client.close()


def test_quickstart_checks_clean_and_applies_against_an_emulator_that_detects_faces(tmp_path, serve):
    server = serve("--detect-faces")
    env = {**server.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    checked = facesync("validate", str(QUICKSTART), "--check-faces", "--strict", cwd=tmp_path, env=env)
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr == ""
    applied = facesync("apply", str(QUICKSTART), "--yes", cwd=tmp_path, env=env)
    assert applied.returncode == 0, applied.stderr
    again = facesync("plan", str(QUICKSTART), "--detailed-exitcode", cwd=tmp_path, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
