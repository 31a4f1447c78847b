"""The whole pipeline, manifest to applied library and back: what a second run costs."""

from __future__ import annotations

import os
import sys

from facesync.apply import execute
from facesync.session import Session
from tests.support import images

_opened: list[str] = []
_watching = [False]


def _audit(event: str, args: tuple) -> None:
    if _watching[0] and event == "open" and isinstance(args[0], (str, bytes)):
        _opened.append(str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed: it records only while a test watches


def images_opened(root) -> set[str]:
    folder = str(root / "faces") + os.sep
    return {path for path in _opened if path.startswith(folder)}


def write_manifest(root) -> str:
    faces = root / "faces"
    faces.mkdir()
    for name, seed in (("alice_1", 1), ("alice_2", 2), ("bob", 3), ("carol", 4)):
        (faces / f"{name}.png").write_bytes(images.png(seed))
    manifest = root / "faceset.yaml"
    manifest.write_text(
        "version: 1\n"
        "groups:\n"
        "  staff:\n"
        "    users:\n"
        "      alice: {user_info: Alice, images: [faces/alice_1.png, faces/alice_2.png]}\n"
        "      bob: {images: [faces/bob.png]}\n"
        "  visitors:\n"
        "    users:\n"
        "      carol: {images: [faces/carol.png]}\n")
    return str(manifest)


def test_a_plan_after_apply_opens_no_image_and_calls_no_detect(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    manifest = write_manifest(tmp_path)
    target = f"local:{tmp_path / 'library.db'}"
    with Session(target) as first:
        plan = first.plan(manifest)
        assert plan.calls == 6  # 2 groups + 4 faces: building costs one call per face
        result = execute(plan, first.library, cache=first.cache)
        assert result.ok

    _opened.clear()
    _watching[0] = True
    try:
        with Session(target) as second:
            plan, details = second.plan_with_details(manifest)
            stats = details.resolve_stats
    finally:
        _watching[0] = False

    assert plan.empty
    assert stats.detect_calls == 0 and stats.bytes_read == 0
    assert images_opened(tmp_path) == set()


def test_a_changed_image_is_read_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    manifest = write_manifest(tmp_path)
    target = f"local:{tmp_path / 'library.db'}"
    with Session(target) as first:
        assert execute(first.plan(manifest), first.library, cache=first.cache).ok
    (tmp_path / "faces" / "bob.png").write_bytes(images.png(30))  # a new photo under the same name

    _opened.clear()
    _watching[0] = True
    try:
        with Session(target) as second:
            plan = second.plan(manifest)
    finally:
        _watching[0] = False

    assert images_opened(tmp_path) == {str(tmp_path / "faces" / "bob.png")}
    # bob's only face replaced: one user/update (sending back the user_info the manifest does not manage)
    assert [op.kind.value for op in plan.operations] == ["update_user"]
