"""``--refresh``, ``--state`` and ``--audit`` on plan, apply and snapshot, and ``policy.refresh``: what the
commands say they trusted, what they cost at ``facesync serve``, and what they refuse."""

from __future__ import annotations

import json

import pytest

from facesync.plan.planfile import load_plan
from tests.support import images
from tests.support.cli import run_in_process as run
from tests.support.server import API_KEY, SECRET_KEY

USERS = 12


@pytest.fixture
def project(tmp_path, monkeypatch):
    faces = tmp_path / "faces"
    faces.mkdir()
    lines = ["version: 1", "groups:", "  staff:", "    users:"]
    for i in range(USERS):
        (faces / f"u{i}.png").write_bytes(images.png(i + 1))
        lines.append(f"      u{i}: {{user_info: U{i}, images: [faces/u{i}.png]}}")
    (tmp_path / "faceset.yaml").write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FACESYNC_TARGET", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_plan_and_apply_keep_a_state_and_an_incremental_plan_says_what_it_trusted(project, capsys):
    target = f"local:{project / 'lib.db'}"
    code, out, err = run(capsys, "apply", "faceset.yaml", "--yes", "--target", target, "--refresh", "incremental",
                         "--state", "state.json")
    assert code == 0, err
    assert "live state from refresh (full: no state of this library yet, at state.json)" in out
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--target", target, "--refresh", "incremental",
                       "--state", "state.json", "--audit", "2")
    assert code == 0 and "No changes." in out
    assert "incremental refresh: 2 users read (2 for the audit), 10 users from the state, the oldest verified at" in out
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--target", target, "--refresh", "incremental",
                       "--state", "state.json", "--format", "json", "--out", "plan.json")
    document = json.loads(out)
    assert document["live_source"].startswith("incremental refresh: 1 user read (1 for the audit), 11 users")
    assert document["refresh"]["mode"] == "incremental" and document["refresh"]["users_from_state"] == 11
    assert (document["refresh"]["users_read"], document["refresh"]["audited"]) == (1, 1)
    assert document["refresh"]["oldest_verified_at"].endswith("Z")
    saved = load_plan((project / "plan.json").read_text())
    assert saved.live_source.startswith("incremental refresh") and saved.refresh == document["refresh"]
    code, shown, _ = run(capsys, "show", "plan.json")
    assert code == 0 and "live state from incremental refresh: 1 user read" in shown
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--target", target, "--refresh", "incremental",
                       "--state", "state.json", "--format", "markdown")
    assert "live state from incremental refresh: 1 user read" in out
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--target", target, "--state", "state.json",
                       "--format", "json")
    assert json.loads(out)["live_source"] == "refresh" and "refresh" not in json.loads(out)  # full: the default


def test_policy_refresh_in_the_manifest_and_the_flag_overrides_it(project, capsys):
    target = f"local:{project / 'lib.db'}"
    assert run(capsys, "apply", "faceset.yaml", "--yes", "--target", target)[0] == 0
    manifest = project / "faceset.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1\n", "version: 1\npolicy:\n  refresh: incremental\n"))
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--target", target)
    assert code == 0 and "incremental refresh: 1 user read" in out  # the default state, in the cache folder
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--target", target, "--refresh", "full")
    assert "live state from refresh)" in out


def test_a_bad_policy_refresh_is_a_manifest_error(project, capsys):
    manifest = project / "faceset.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1\n", "version: 1\npolicy:\n  refresh: sometimes\n"))
    code, _out, err = run(capsys, "validate", "faceset.yaml")
    assert code == 1 and "faceset.yaml:3" in err and "refresh" in err and "Traceback" not in err


def test_options_that_do_not_go_together_are_refused(project, capsys):
    target = f"local:{project / 'lib.db'}"
    assert run(capsys, "plan", "faceset.yaml", "--target", target, "--out", "plan.json")[0] == 0
    code, _, err = run(capsys, "plan", "faceset.yaml", "--live", "live.json", "--refresh", "incremental")
    assert code == 1 and "do not go with --live" in err
    code, _, err = run(capsys, "apply", "plan.json", "--refresh", "incremental")
    assert code == 1 and "--refresh and --audit go with a manifest" in err
    code, _, err = run(capsys, "snapshot", "--target", target, "--out", "s.json", "--refresh", "incremental")
    assert code == 1 and "need a MANIFEST" in err
    code, _, err = run(capsys, "plan", "faceset.yaml", "--refresh", "sometimes")
    assert code == 1 and "sometimes" in err
    code, _, err = run(capsys, "plan", "faceset.yaml", "--audit", "-1")
    assert code == 1 and "--audit" in err


def test_an_incremental_no_op_costs_the_listings_and_the_audit_at_the_server(project, capsys, serve, monkeypatch):
    server = serve()
    monkeypatch.setenv("BAIDU_API_KEY", API_KEY)
    monkeypatch.setenv("BAIDU_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("FACESYNC_TARGET", server.base_url)
    assert run(capsys, "apply", "faceset.yaml", "--yes", "--qps", "500")[0] == 0
    server.reset()
    assert run(capsys, "plan", "faceset.yaml", "--qps", "500")[0] == 0
    full = server.stats()["counters"]
    assert full == {"faceset/group/getlist": 1, "faceset/group/getusers": 1, "faceset/face/getlist": USERS,
                    "faceset/user/get": USERS}
    server.reset()
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--qps", "500", "--refresh", "incremental", "--audit", "1")
    assert code == 0 and "No changes." in out
    assert server.stats()["counters"] == {"faceset/group/getlist": 1, "faceset/group/getusers": 1,
                                          "faceset/face/getlist": 1, "faceset/user/get": 1}
    states = list((project / "cache").glob("state-*.json"))
    assert len(states) == 1
    text = states[0].read_text()
    assert API_KEY not in text and SECRET_KEY not in text and "access_token" not in text
    document = json.loads(text)  # ids, face_tokens, user_info and times only
    assert set(document) == {"format_version", "facesync_version", "target", "users"}
    assert document["target"].startswith(server.base_url)
    assert {key for row in document["users"] for key in row} == {"group_id", "user_id", "face_tokens", "user_info",
                                                                 "verified_at", "entry"}


def test_snapshot_takes_the_refresh_options(project, capsys):
    target = f"local:{project / 'lib.db'}"
    assert run(capsys, "apply", "faceset.yaml", "--yes", "--target", target, "--state", "s.json")[0] == 0
    code, _, err = run(capsys, "snapshot", "faceset.yaml", "--target", target, "--out", "live.json",
                       "--refresh", "incremental", "--state", "s.json", "--audit", "3")
    assert code == 0, err
    live = json.loads((project / "live.json").read_text())
    assert len(live["groups"][0]["users"]) == USERS
    code, out, _ = run(capsys, "plan", "faceset.yaml", "--live", "live.json")
    assert code == 0 and "No changes." in out


def test_the_session_takes_the_same_choices(project):
    from facesync.session import Session

    target = f"local:{project / 'lib.db'}"
    with Session.for_manifest("faceset.yaml", target, state="s.json") as session:
        assert session.apply().ok
    with Session.for_manifest("faceset.yaml", target, refresh="incremental", state="s.json", audit=0) as session:
        plan, details = session.plan_with_details()
    assert plan.empty and details.trust.mode == "incremental"
    assert (details.trust.users_read, details.trust.users_from_state) == (0, USERS)
