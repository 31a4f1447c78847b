"""apply over real HTTP against ``facesync serve --faults``: transient faults, rejected images, quota."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time

import pytest
import yaml

from facesync import apply
from facesync.api.baidu import BaiduClient
from facesync.api.retry import RetryPolicy
from facesync.cache import TokenCache
from facesync.local.store import LocalLibrary
from facesync.model import Desired, DesiredGroup, DesiredUser
from tests.support.cli import run_facesync
from tests.support.images import png
from tests.test_apply import desired_state, execute, image_file, plan_for, seed_library, snapshot, token_of

TRANSIENT_FAULTS = {
    "seed": 7,
    "faults": [
        {"kind": "error", "rate": 0.15, "codes": [18, 2, 222901]},
        {"kind": "http_502", "rate": 0.05},
        {"kind": "drop", "rate": 0.05},
        {"kind": "drop_after_commit", "rate": 0.05,
         "endpoints": ["faceset/user/add", "faceset/user/copy", "faceset/face/delete", "faceset/user/delete",
                       "faceset/group/add", "faceset/group/delete", "faceset/user/update"]},
    ],
}

pytestmark = pytest.mark.both_unknowns


def write_faults(tmp_path, faults: dict) -> str:
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(faults))
    return str(path)


def seeded_server(serve, tmp_path, layout: dict, *extra: str):
    db = str(tmp_path / "served.db")
    with LocalLibrary(db) as library:
        seed_library(library, layout)
    server = serve(*extra, db=db)
    remember_seeded(server, layout)
    return server


def remember_seeded(server, layout: dict, directory=None) -> None:
    """Put the tokens the seeding adds answered into the cache the CLI uses for ``server`` (in ``directory``,
    by default beside its db), as if facesync had built the library: a service whose detect answers other
    tokens (harsh) can be planned no other way."""
    folder = str(directory) if directory is not None else str(server.db) + ".cache"
    with TokenCache.for_target(f"{server.base_url} app {server.app_id}", folder) as cache:
        for users in layout.values():
            for seeds, _ in users.values():
                for seed in seeds:
                    cache.record(hashlib.sha256(png(seed)).hexdigest(), token_of(seed))


def served_state(server, group_ids) -> dict:
    with LocalLibrary(server.db) as library:
        return snapshot(library, group_ids)


def write_manifest(tmp_path, groups: dict) -> str:
    """groups: {group: {user: ([seeds], user_info)}} → a manifest file with images beside it."""
    for users in groups.values():
        for seeds, _ in users.values():
            for seed in seeds:
                image_file(tmp_path, seed)
    doc = {"version": 1, "groups": {
        g: {"users": {u: {"images": [f"face{s}.png" for s in seeds], **({"user_info": info} if info else {})}
                      for u, (seeds, info) in users.items()}}
        for g, users in groups.items()}}
    path = tmp_path / "faceset.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


def run_apply(server, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**server.env(), "FACESYNC_CACHE_DIR": str(server.db) + ".cache"}
    return run_facesync("apply", "--qps", "500", *args, env=env, timeout=timeout)


def test_apply_converges_through_thirty_percent_transient_faults(serve, tmp_path):
    server = seeded_server(serve, tmp_path, {"g": {"keep": ([1, 2], "k"), "gone": ([3], ""), "swap": ([4], "s")},
                                             "old": {"x": ([5], "")}},
                           "--faults", write_faults(tmp_path, TRANSIENT_FAULTS))
    desired = Desired(groups=(
        DesiredGroup("g", (DesiredUser("keep", (image_file(tmp_path, 1), image_file(tmp_path, 6)), "k2"),
                           DesiredUser("swap", (image_file(tmp_path, 7), image_file(tmp_path, 8)), "s"),
                           *(DesiredUser(f"n{i}", (image_file(tmp_path, 20 + i), image_file(tmp_path, 40 + i)), "n")
                             for i in range(8)))),
        DesiredGroup("h", tuple(DesiredUser(f"n{i}", (image_file(tmp_path, 20 + i), image_file(tmp_path, 40 + i)), "n")
                                for i in range(8))),
    ))
    client = BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None)
    client.policy = RetryPolicy(max_attempts=25, max_elapsed=60, base_delay=0.02, max_delay=0.2)
    client.connect()  # the token, so that the identity names the app
    cache = TokenCache.for_target(client.identity, str(server.db) + ".cache")  # knows the seeded faces
    try:
        plan = plan_for(client, desired, cache)
        result = execute(plan, client, concurrency=8, cache=cache)
        assert result.ok, (result.failures, result.problems)
        assert result.calls > len(plan.operations)  # retries happened and were counted
        assert served_state(server, ["g", "h"]) == desired_state(desired)
        assert plan_for(client, desired, cache).empty
    finally:
        client.close()
        cache.close()
    faults = server.stats()
    assert faults["total"] > len(plan.operations)


def test_rejected_image_fails_its_op_skips_dependents_and_exits_1(serve, tmp_path):
    faults = {"reject_images": [{"face_token": token_of(50), "code": 223120}]}
    server = seeded_server(serve, tmp_path, {"g": {"u": ([1, 2], ""), "other": ([3], "")}},
                           "--faults", write_faults(tmp_path, faults))
    manifest = write_manifest(tmp_path, {"g": {"u": ([1, 50], ""), "other": ([4], ""), "new": ([5], "")}})
    report_path = tmp_path / "report.json"
    done = run_apply(server, manifest, "--yes", "--report", str(report_path))
    assert done.returncode == 1, done.stderr
    assert "223120" in done.stdout + done.stderr and "liveness" in done.stdout + done.stderr
    report = json.loads(report_path.read_text())
    outcomes = {(op["kind"], op["user_id"]): op["outcome"] for op in report["operations"]}
    assert outcomes[("add_face", "u")] == "failed"
    assert outcomes[("delete_face", "u")] == "skipped"
    assert outcomes[("add_face", "new")] == "done"
    assert report["totals"]["failed"] == 1 and not report["ok"]
    failed = next(op for op in report["operations"] if op["outcome"] == "failed")
    assert failed["error_code"] == 223120 and failed["log_id"] and failed["attempts"] >= 1
    state = served_state(server, ["g"])
    assert state["g"]["u"][0] == tuple(sorted([token_of(1), token_of(2)]))  # keeps its old faces
    assert state["g"]["other"][0] == (token_of(4),)
    text = report_path.read_text() + done.stdout + done.stderr
    assert server.api_key not in text and server.secret_key not in text


def test_quota_exhaustion_stops_the_run_at_once(serve, tmp_path):
    faults = {"faults": [{"kind": "error", "rate": 1.0, "codes": [17], "endpoints": ["faceset/face/delete"]}]}
    users = {f"u{i}": ([i, 100 + i], "") for i in range(1, 30)}
    server = seeded_server(serve, tmp_path, {"g": users}, "--faults", write_faults(tmp_path, faults))
    manifest = write_manifest(tmp_path, {"g": {user: ([seeds[0]], "") for user, (seeds, _) in users.items()}})
    report_path = tmp_path / "report.json"
    done = run_apply(server, manifest, "--yes", "--force", "--concurrency", "2", "--report", str(report_path))
    assert done.returncode == 1, done.stderr
    assert "daily request limit" in done.stderr and "quota" in done.stderr
    report = json.loads(report_path.read_text())
    assert report["stopped"]
    assert report["totals"]["skipped"] >= 25  # nothing new started after the first 17
    assert server.stats()["counters"].get("faceset/face/delete", 0) <= 2
    assert served_state(server, ["g"])["g"]["u1"][0] == tuple(sorted([token_of(1), token_of(101)]))


def test_a_user_update_answered_after_the_timeout_is_never_sent_again(serve, tmp_path):
    """A late user/update would wipe the faces re-added after it: the client does not repeat it, the
    executor reads the library instead, and the next apply converges from what is there."""
    faults = {"seed": 1, "faults": [{"kind": "slow", "rate": 1.0, "delay_ms": 2000,
                                     "endpoints": ["faceset/user/update"]}]}
    journal = tmp_path / "journal.jsonl"
    server = seeded_server(serve, tmp_path, {"g": {"u": ([1, 2, 3], "old")}},
                           "--faults", write_faults(tmp_path, faults), "--journal", str(journal))
    images = tuple(image_file(tmp_path, seed) for seed in (1, 2, 3))
    desired = Desired(groups=(DesiredGroup("g", (DesiredUser("u", images, "new"),)),))
    client = BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None, read_timeout=0.5)
    client.connect()  # the token, so that the identity names the app
    cache = TokenCache.for_target(client.identity, str(server.db) + ".cache")
    try:
        plan = plan_for(client, desired, cache)
        assert [op.kind.value for op in plan.operations] == ["update_user", "add_face", "add_face"]
        result = execute(plan, client, cache=cache)
        update = result.results[0]
        assert update.outcome == apply.FAILED and "not sent again" in update.error_msg
        assert [r.outcome for r in result.results[1:]] == [apply.SKIPPED, apply.SKIPPED]
        updates = wait_for(lambda: [e for e in server.journal() if e["endpoint"] == "faceset/user/update"])
        assert len(updates) == 1 and updates[0]["executed"]  # the original landed late, and only it
        assert served_state(server, ["g"]) == {"g": {"u": ((token_of(1),), "new")}}  # files still hold 2, 3

        again = plan_for(client, desired, cache)
        assert [op.kind.value for op in again.operations] == ["add_face", "add_face"]
        assert execute(again, client, cache=cache).ok
        assert served_state(server, ["g"]) == desired_state(desired)
    finally:
        client.close()
        cache.close()


def wait_for(probe, seconds: float = 20.0):
    """``probe()`` once it is truthy (polled), so a test waits for an event without timing it."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.1)
