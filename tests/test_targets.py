"""Choosing and opening a target: credentials only go where a person sent them, and reading a
``local:`` library that does not exist yet never creates it. Through the command line, as a user runs it."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from facesync.errors import ConfigError
from facesync.targets import BAIDU_URL, choose_target
from tests.support.cli import environment, run_facesync
from tests.support.images import png

MANIFEST = """version: 1
{target}groups:
  staff:
    users:
      alice:
        images: [faces/a.png]
"""


def project(root: Path, target: str = "") -> Path:
    (root / "faces").mkdir(parents=True)
    (root / "faces" / "a.png").write_bytes(png(1))
    manifest = root / "faceset.yaml"
    manifest.write_text(MANIFEST.format(target=f"target: {target}\n" if target else ""))
    return manifest


def facesync(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_facesync(*args, cwd=cwd, env=environment(without=("FACESYNC_TARGET",), **(env or {})))


def tree(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder``: its kind, bytes' hash and mtime; any creation or write shows."""
    found = {}
    for path in sorted(folder.rglob("*")):
        status = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
        found[str(path.relative_to(folder))] = (status.st_mode, digest, status.st_mtime_ns)
    return found


# ---- credentials go only to a target chosen outside the manifest -------------------------------------


def test_a_server_named_only_by_the_manifest_gets_no_request(tmp_path, serve):
    server = serve()
    manifest = project(tmp_path / "repo", server.base_url)
    env = {"BAIDU_API_KEY": server.api_key, "BAIDU_SECRET_KEY": server.secret_key,
           "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    for command in (["plan", str(manifest)], ["apply", str(manifest), "--yes"], ["snapshot", str(manifest), "-o",
                                                                                 str(tmp_path / "s.json")]):
        done = facesync(*command, cwd=tmp_path, env=env)
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "Traceback" not in done.stderr
        assert f"the manifest names the target {server.base_url}" in done.stderr
        assert f"hint: if you trust that server, choose it yourself: --target {server.base_url} " \
               f"(or FACESYNC_TARGET={server.base_url})" in done.stderr
        assert server.api_key not in done.stderr + done.stdout
    assert server.stats()["total"] == 0  # not even a token request reached it
    assert server.journal() == []

    chosen = facesync("plan", str(manifest), "--target", server.base_url, cwd=tmp_path, env=env)
    assert chosen.returncode == 0, chosen.stderr
    assert "+ user alice" in chosen.stdout
    assert server.stats()["total"] > 0
    from_environment = facesync("plan", str(manifest), cwd=tmp_path, env={**env, "FACESYNC_TARGET": server.base_url})
    assert from_environment.returncode == 0, from_environment.stderr


@pytest.mark.parametrize("written, kind, location", [
    ("baidu", "http", BAIDU_URL),
    (BAIDU_URL, "http", BAIDU_URL),
    ("local:lib.db", "local", "lib.db"),
])
def test_the_manifest_may_name_baidu_or_a_local_library(monkeypatch, written, kind, location):
    monkeypatch.delenv("FACESYNC_TARGET", raising=False)
    spec = choose_target(None, written)
    assert (spec.kind, spec.location) == (kind, location)


def test_a_flag_or_the_environment_overrides_a_refused_manifest_target(monkeypatch):
    monkeypatch.delenv("FACESYNC_TARGET", raising=False)
    with pytest.raises(ConfigError, match="the manifest names the target https://example.test"):
        choose_target(None, "https://example.test")
    assert choose_target("local:x.db", "https://example.test").location == "x.db"
    monkeypatch.setenv("FACESYNC_TARGET", "http://127.0.0.1:9")
    assert choose_target(None, "https://example.test").location == "http://127.0.0.1:9"


# ---- a missing local library -------------------------------------------------------------------------


@pytest.mark.parametrize("target", [None, "local:lib/library.db"])
def test_plan_and_validate_of_a_missing_local_library_leave_the_folder_untouched(tmp_path, target):
    manifest = project(tmp_path / "repo")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("keep me\n")
    before = tree(elsewhere)
    flags = ["--target", target] if target else []
    env = {"FACESYNC_CACHE_DIR": str(tmp_path / "cache")}

    planned = facesync("plan", str(manifest), *flags, cwd=elsewhere, env=env)
    assert planned.returncode == 0, planned.stderr
    library = elsewhere / (target[len("local:"):] if target else ".facesync/library.db")
    assert f"the library local:{library} does not exist yet: it will be created by apply" in planned.stderr
    assert "+ group staff" in planned.stdout and "+ user alice" in planned.stdout
    validated = facesync("validate", str(manifest), cwd=elsewhere, env=env)
    assert validated.returncode == 0, validated.stderr
    assert tree(elsewhere) == before

    applied = facesync("apply", str(manifest), *flags, "--yes", cwd=elsewhere, env=env)
    assert applied.returncode == 0, applied.stderr
    assert library.is_file()
    again = facesync("plan", str(manifest), *flags, "--detailed-exitcode", cwd=elsewhere, env=env)
    assert again.returncode == 0 and "does not exist" not in again.stderr


@pytest.mark.parametrize("command", [["export"], ["snapshot", "-o", "live.json"]])
def test_export_and_snapshot_of_a_missing_local_library_are_errors(tmp_path, command):
    before = tree(tmp_path)
    done = facesync(*command, "--target", "local:lib/library.db", cwd=tmp_path,
                    env={"FACESYNC_CACHE_DIR": str(tmp_path.parent / f"{tmp_path.name}-cache")})
    assert done.returncode == 1
    assert f"Error: the library local:{tmp_path / 'lib' / 'library.db'} does not exist" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert tree(tmp_path) == before


def test_validate_warns_of_a_server_target_and_export_does_not_write_one(tmp_path, serve):
    server = serve()
    manifest = project(tmp_path / "repo", server.base_url)
    warned = facesync("validate", str(manifest), cwd=tmp_path)
    assert warned.returncode == 0
    assert f"faceset.yaml:2:9: warning: the manifest names the target {server.base_url}" in warned.stderr

    exported = facesync("export", cwd=tmp_path, env={**server.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "cache")})
    assert exported.returncode == 0, exported.stderr
    assert "target:" not in exported.stdout and "version: 1" in exported.stdout
    (tmp_path / "exported.yaml").write_text(exported.stdout)
    clean = facesync("validate", "exported.yaml", cwd=tmp_path)
    assert clean.returncode == 0 and clean.stderr == "", clean.stderr
