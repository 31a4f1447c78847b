"""What a reviewer approves is what runs, and what a reviewer sees is all of it: through the command line,
against the local library and ``facesync serve``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from facesync.local.store import LocalLibrary
from tests.test_apply import seed_library, token_of
from tests.test_apply_faults import write_faults, write_manifest


def facesync(*args: str, cwd=None, env: dict | None = None, cache=None) -> subprocess.CompletedProcess:
    environment = {**os.environ, **(env or {})}
    environment.pop("NO_COLOR", None)
    if env is None or "FACESYNC_TARGET" not in env:
        environment.pop("FACESYNC_TARGET", None)
    if cache is not None:
        environment["FACESYNC_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "facesync", *args], check=False, env=environment, cwd=cwd,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)


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
    assert "1 group(s) of the manifest outside --group left alone: staff" in done.stdout
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


def test_after_a_failure_apply_says_what_was_verified_and_what_was_not(serve, tmp_path):
    faults = {"reject_images": [{"face_token": token_of(50), "code": 223120}]}
    db = str(tmp_path / "served.db")
    with LocalLibrary(db) as library:
        seed_library(library, {"g": {"u": ([1, 2], ""), "other": ([3], "")}})
    server = serve("--faults", write_faults(tmp_path, faults), db=db)
    manifest = write_manifest(tmp_path, {"g": {"u": ([1, 50], ""), "other": ([4], ""), "new": ([5], "")}})
    report = tmp_path / "report.json"
    done = facesync("apply", manifest, "--yes", "--verify", "full", "--report", str(report), env=server.env(),
                    cache=tmp_path / "c")
    assert done.returncode == 1, done.stderr
    assert "1 failed, 1 skipped" in done.stdout
    assert "the library holds what the plan wanted" not in done.stdout
    assert "Verified: what the operations that succeeded did" in done.stdout
    assert "Not verified, and not as the plan wants (1 with a failed or skipped operation): g/u." in done.stdout
    verification = json.loads(report.read_text())["verification"]
    assert verification["ok"] is False and verification["not_verified"] == ["g/u"]

    unverified = facesync("apply", manifest, "--yes", "--verify", "off", env=server.env(), cache=tmp_path / "c")
    assert "Not verified: --verify off" in unverified.stdout and "Verified:" not in unverified.stdout
