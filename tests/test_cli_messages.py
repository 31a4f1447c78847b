"""What a person reads when something goes wrong or is worth saying: one error with its cause and a
hint, retries only at -v, each warning once, global options anywhere, plurals right."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from facesync.cli import hoist_global_options
from tests.support.cli import environment, run_facesync

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "faceset.yaml"


def facesync(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    unset = ("FACESYNC_TARGET", "BAIDU_API_KEY", "BAIDU_SECRET_KEY", "BAIDU_APP_ID", "NO_COLOR")
    return run_facesync(*args, cwd=cwd, env=environment(without=unset, FACESYNC_CACHE_DIR=str(cwd / "cache"), **env))


@pytest.mark.parametrize("args, expected", [
    (["plan", "m.yaml", "-v"], ["-v", "plan", "m.yaml"]),
    (["plan", "m.yaml", "-q", "--log-format", "json"], ["-q", "--log-format", "json", "plan", "m.yaml"]),
    (["-v", "apply", "p.json", "--log-format=json", "-vv", "--yes"], ["-v", "--log-format=json", "-vv", "apply",
                                                                      "p.json", "--yes"]),
    (["plan", "m.yaml", "--no-color"], ["plan", "m.yaml", "--no-color"]),  # plan's own option stays
    (["validate", "m.yaml", "--no-color"], ["--no-color", "validate", "m.yaml"]),
    (["plan", "m.yaml", "--out", "-v"], ["plan", "m.yaml", "--out", "-v"]),  # a value, not an option
    (["plan", "--", "-q"], ["plan", "--", "-q"]),
    (["nonsense", "-v"], ["nonsense", "-v"]),
])
def test_global_options_after_the_command_move_before_it(args, expected):
    assert hoist_global_options(args) == expected


def test_global_options_work_after_the_command(tmp_path):
    quiet = facesync("validate", str(QUICKSTART), "-q", "--no-color", cwd=tmp_path)
    verbose = facesync("plan", str(QUICKSTART), "--target", f"local:{tmp_path / 'l.db'}", "-v", cwd=tmp_path)

    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert verbose.returncode == 0 and "resolved" in verbose.stderr  # an info line: -v was taken


def test_an_unreachable_target_is_one_error_with_a_hint_and_retries_only_at_v(tmp_path):
    keys = {"BAIDU_API_KEY": "k", "BAIDU_SECRET_KEY": "s"}
    plain = facesync("plan", str(QUICKSTART), "--target", "http://127.0.0.1:9", cwd=tmp_path, **keys)
    detailed = facesync("plan", str(QUICKSTART), "--target", "http://127.0.0.1:9", "-v", cwd=tmp_path, **keys)

    assert plain.returncode == detailed.returncode == 1
    lines = plain.stderr.splitlines()
    assert len(lines) == 2, plain.stderr
    assert lines[0].startswith("Error: ") and "http://127.0.0.1:9" in lines[0] and "Connection refused" in lines[0]
    assert lines[1].startswith("  hint: check the URL") and "facesync serve" in lines[1] and "PROXY" in lines[1]
    assert "(--target or FACESYNC_TARGET)" in lines[1] and "manifest" not in lines[1]  # it cannot name a server
    assert "retry" not in plain.stderr and "retry 1" in detailed.stderr


def test_missing_keys_for_a_serve_url_name_serves_defaults(tmp_path):
    local = facesync("plan", str(QUICKSTART), "--target", "http://127.0.0.1:8000", cwd=tmp_path)
    remote = facesync("plan", str(QUICKSTART), "--target", "baidu", cwd=tmp_path)

    assert local.returncode == remote.returncode == 1
    assert "BAIDU_API_KEY is not set" in local.stderr and "local-api-key" in local.stderr
    assert "local-secret-key" in local.stderr and "facesync serve" in local.stderr
    assert "Baidu AI console" in remote.stderr and "local-api-key" not in remote.stderr


def test_the_local_default_notice_comes_once_per_library(tmp_path):
    first = facesync("apply", str(QUICKSTART), "--yes", cwd=tmp_path)
    again = facesync("plan", str(QUICKSTART), cwd=tmp_path)
    asked = facesync("plan", str(QUICKSTART), "-v", cwd=tmp_path)

    assert first.returncode == again.returncode == asked.returncode == 0, first.stderr + again.stderr
    assert first.stderr.count("no target given") == 1  # the library is created by this run
    assert "no target given" not in again.stderr and "No changes" in again.stdout
    assert "no target given" in asked.stderr


def test_each_warning_once(tmp_path):
    manifest = tmp_path / "faceset.yaml"
    manifest.write_text("version: 1\ngroups:\n  staff:\n    users: {}\n")
    library = f"local:{tmp_path / 'l.db'}"
    from facesync.local.store import LocalLibrary

    with LocalLibrary(str(tmp_path / "l.db")) as lib:  # 12 users that the manifest above would all delete
        from facesync.api.protocol import Image
        from tests.support.images import png

        lib.group_add("staff")
        for i in range(12):
            lib.user_add("staff", f"u{i}", Image.from_bytes(png(i + 1)))

    planned = facesync("plan", str(manifest), "--target", library, cwd=tmp_path)

    assert planned.returncode == 0, planned.stderr
    everything = planned.stdout + planned.stderr
    assert everything.lower().count("unsafe") == 1, everything
    assert planned.stderr.count("has no users") == 1 and "warning: faceset.yaml" not in planned.stderr


def test_counts_agree_with_their_number(tmp_path):
    from facesync.words import counted

    assert [counted(n, "group") for n in (0, 1, 2)] == ["0 groups", "1 group", "2 groups"]
    assert counted(1, "person", "people") == "1 person" and counted(3, "person", "people") == "3 people"
    manifest = tmp_path / "faceset.yaml"
    (tmp_path / "a.jpg").write_bytes((ROOT / "examples" / "quickstart" / "faces" / "bob.jpg").read_bytes())
    manifest.write_text("version: 1\ngroups:\n  staff:\n    users:\n      bob:\n        images: [a.jpg]\n")
    library = f"local:{tmp_path / 'l.db'}"

    validated = facesync("validate", str(manifest), cwd=tmp_path)
    applied = facesync("apply", str(manifest), "--yes", "--target", library, cwd=tmp_path)
    exported = facesync("export", "--target", library, cwd=tmp_path)

    assert "manifest OK: 1 group, 1 user, 1 face" in validated.stdout
    assert "(2 operations, 2 calls in" in applied.stdout and "(1 read in" in applied.stdout, applied.stdout
    assert "Exported 1 group, 1 user, 1 face." in exported.stderr
    everything = validated.stdout + applied.stdout + applied.stderr + exported.stdout + exported.stderr
    assert "(s)" not in everything and not any(f"1 {noun}s" in everything for noun in ("group", "user", "face"))


def test_ctrl_c_exits_130_saying_interrupted(tmp_path):
    """Ctrl-C while facesync waits on a server that never answers: exit 130, "Interrupted.", no traceback."""
    import signal
    import socket
    import time

    silent = socket.create_server(("127.0.0.1", 0))  # accepts connections, never answers
    try:
        manifest = tmp_path / "faceset.yaml"
        manifest.write_text("version: 1\ngroups:\n  g:\n    users: {}\n")
        env = {**os.environ, "BAIDU_API_KEY": "k", "BAIDU_SECRET_KEY": "s",
               "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        process = subprocess.Popen([sys.executable, "-m", "facesync", "plan", str(manifest), "--target", url],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        conn = None
        silent.settimeout(30)
        conn, _ = silent.accept()  # facesync is now waiting for its token
        time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
        assert process.returncode == 130, err
        assert "Interrupted." in err
        assert "Traceback" not in err
    finally:
        if conn is not None:
            conn.close()
        silent.close()


def test_one_photo_on_two_users_of_a_group_is_warned_and_its_failure_says_what_to_do(tmp_path):
    from tests.support.images import png

    (tmp_path / "a.png").write_bytes(png(1))
    (tmp_path / "b.png").write_bytes(png(2))
    manifest = tmp_path / "faceset.yaml"
    manifest.write_text("version: 1\ngroups:\n  staff:\n    users:\n      alice:\n        images: [a.png]\n"
                        "      bob:\n        images:\n          - b.png\n          - a.png\n")
    library = f"local:{tmp_path / 'l.db'}"

    validated = facesync("validate", "faceset.yaml", cwd=tmp_path)
    runs = [facesync("apply", str(manifest), "--yes", "--target", library, cwd=tmp_path, FACESYNC_UNKNOWNS="harsh")
            for _ in range(2)]

    assert validated.returncode == 0, validated.stderr
    assert ("faceset.yaml:10:13: warning: image 'a.png' is listed for users 'alice' (faceset.yaml:6:18) and 'bob' "
            "of group 'staff': Baidu may refuse the same face on two users of one group") in validated.stderr
    for run in runs:  # harsh: refused on every run, so "run apply again" would be no advice at all
        assert run.returncode == 1 and "223105" in run.stderr, run.stdout + run.stderr
        assert "hint: running apply again fails the same way" in run.stderr
        assert "run apply again: done work is not redone" not in run.stderr


def test_a_server_named_by_the_manifest_is_refused_in_one_message(tmp_path):
    manifest = tmp_path / "faceset.yaml"
    manifest.write_text(QUICKSTART.read_text().replace("version: 1\n", "version: 1\ntarget: http://127.0.0.1:9\n"))
    for faces in (QUICKSTART.parent / "faces").iterdir():
        (tmp_path / "faces").mkdir(exist_ok=True)
        (tmp_path / "faces" / faces.name).write_bytes(faces.read_bytes())

    planned = facesync("plan", str(manifest), cwd=tmp_path)
    applied = facesync("apply", str(manifest), "--yes", cwd=tmp_path)
    validated = facesync("validate", str(manifest), cwd=tmp_path)

    for refused in (planned, applied):
        assert refused.returncode == 1 and refused.stderr.count("the manifest names the target") == 1, refused.stderr
        assert refused.stderr.startswith("Error: the manifest names the target http://127.0.0.1:9")
    assert validated.returncode == 0 and "warning: the manifest names the target" in validated.stderr
