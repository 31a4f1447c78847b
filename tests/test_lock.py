"""The apply lock: lock groups in the library (no image), plus a flock beside a local library."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml

from facesync.api.baidu import BaiduClient
from facesync.errors import LockHeldError, ManifestError
from facesync.local.store import LocalLibrary
from facesync.lock import (
    GroupLock,
    LockHolder,
    library_lock,
    lock_group_id,
    parse_lock_group,
    read_lock_groups,
)
from facesync.manifest import load
from facesync.model import LOCK_GROUP_PREFIX, STAGE_GROUP_PREFIX, is_lock_group
from facesync.targets import parse_target
from tests.support.cli import run_facesync

pytestmark = pytest.mark.both_unknowns  # the lock never relies on an undocumented answer

QUICKSTART = os.path.join(os.path.dirname(__file__), "..", "examples", "quickstart")


def client_for(server) -> BaiduClient:
    return BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None)


def lock_groups(library) -> list[str]:
    return [group.group_id for group in read_lock_groups(library)]


def dead_holder(library, *, expires: float, pid: int = 4242) -> str:
    """The holder group an apply killed by kill -9 leaves behind."""
    group_id = lock_group_id(LockHolder("deadhost", pid, None, expires, "dead00"), holding=True, local=False)
    library.group_add(group_id)
    return group_id


# ---- the record in a group id -----------------------------------------------------------------------


def test_lock_group_ids_carry_holder_and_expiry_within_the_group_id_rules():
    holder = LockHolder("ci-runner-7.example.internal", 4194303, None, 4102444800.0, "a1b2c3")
    for holding in (True, False):
        for local in (True, False):
            group_id = lock_group_id(holder, holding=holding, local=local)
            assert len(group_id.encode()) <= 48 and group_id.replace("_", "").isalnum()
            assert is_lock_group(group_id)
            parsed = parse_lock_group(group_id)
            assert (parsed.holding, parsed.local) == (holding, local)
            assert parsed.holder.pid == 4194303 and parsed.holder.expires == 4102444800.0
            assert parsed.nonce == "a1b2c3" and parsed.holder.host.startswith("ci_runner")
    legacy = parse_lock_group(LOCK_GROUP_PREFIX)  # an older facesync's lock: unknown holder, never expires
    assert legacy.holder is None and legacy.holding and not legacy.expired(time.time())
    assert not is_lock_group("staff") and not is_lock_group("facesync_lock")


@pytest.mark.parametrize("group_id", [LOCK_GROUP_PREFIX, LOCK_GROUP_PREFIX + "_hr1_abc_1_host", LOCK_GROUP_PREFIX + "2",
                                      STAGE_GROUP_PREFIX + "staff", "_facesync_other"])
def test_the_manifest_may_not_name_a_lock_or_staging_group(tmp_path, group_id):
    (tmp_path / "faceset.yaml").write_text(f"version: 1\ngroups:\n  {group_id}: {{}}\n")
    with pytest.raises(ManifestError) as refused:
        load(str(tmp_path / "faceset.yaml"))
    [found] = [d for d in refused.value.diagnostics if d.is_error]
    assert "reserved" in found.headline() and LOCK_GROUP_PREFIX in found.hint


def test_local_file_holder_record_round_trips():
    holder = LockHolder("h" * 300, 123, 1700000000.0, None, "")
    back = LockHolder.from_json(holder.to_json())
    assert back.pid == 123 and back.since == 1700000000.0 and not back.expired(1e12)
    assert LockHolder.from_json("not json") is None


# ---- the group lock over HTTP ---------------------------------------------------------------------------


def test_lock_is_exclusive_names_its_holder_and_uploads_nothing(serve):
    server = serve()
    first, second = client_for(server), client_for(server)
    spec = parse_target(server.base_url)
    with library_lock(spec, first) as me:
        [group_id] = lock_groups(first)
        assert parse_lock_group(group_id).holding and parse_lock_group(group_id).nonce == me.lock_id
        with pytest.raises(LockHeldError) as held, library_lock(spec, second):
            pass
        assert f"pid {me.pid}" in str(held.value) and "--break-lock" in str(held.value)
        assert lock_groups(first) == [group_id]  # the one that gave way left nothing behind
    assert lock_groups(first) == []
    with library_lock(spec, second):
        pass
    endpoints = {entry["endpoint"] for entry in server.journal()}
    assert endpoints == {"faceset/group/add", "faceset/group/delete"}  # no user/add, no image


def test_a_dead_holder_needs_break_lock_until_its_lock_expires(serve):
    server = serve()
    client = client_for(server)
    spec = parse_target(server.base_url)
    dead = dead_holder(client, expires=time.time() + 3600)
    with pytest.raises(LockHeldError) as held, library_lock(spec, client):
        pass
    assert "pid 4242 on host deadhost" in str(held.value) and "--break-lock" in str(held.value)
    with library_lock(spec, client, break_lock=True) as me:
        assert dead not in lock_groups(client)
        assert [parse_lock_group(g).nonce for g in lock_groups(client)] == [me.lock_id]

    expired = dead_holder(client, expires=time.time() - 1)
    with library_lock(spec, client) as me:  # an expired lock is removed and taken
        assert expired not in lock_groups(client)
    assert lock_groups(client) == []


def test_renewal_moves_the_expiry_forward_and_release_removes_every_own_group(serve):
    server = serve()
    client = client_for(server)
    lock = GroupLock(client, ttl=60)
    lock.acquire()
    lock._stop.set()  # renew by hand, not by the thread
    before = lock_groups(client)
    lock.ttl = 120  # a later expiry, as time passing would give
    assert lock.renew()
    after = lock_groups(client)
    assert len(after) == 1 and after != before
    assert parse_lock_group(after[0]).holder.expires > parse_lock_group(before[0]).holder.expires
    lock.release()
    assert lock_groups(client) == []


def test_a_lock_removed_under_its_holder_is_not_renewed_and_others_are_untouched(serve):
    server = serve()
    client = client_for(server)
    lock = GroupLock(client)
    lock.acquire()
    lock._stop.set()
    other = GroupLock(client)
    other.acquire(break_lock=True)
    assert not lock.renew()
    lock.release()  # must not remove the other apply's lock
    assert [parse_lock_group(g).nonce for g in lock_groups(client)] == [other.nonce]
    other.release()


def test_a_lost_answer_to_the_locks_own_group_add_leaves_no_orphan(serve, tmp_path):
    faults = tmp_path / "faults.yaml"
    faults.write_text(yaml.safe_dump({"seed": 1, "faults": [
        {"kind": "drop_after_commit", "rate": 0.5, "endpoints": ["faceset/group/add"]}]}))
    server = serve("--faults", str(faults))
    manifest = tmp_path / "quickstart"
    shutil.copytree(QUICKSTART, manifest)
    env = {**server.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    command = ["apply", str(manifest / "faceset.yaml"), "--yes"]
    first = run_facesync(*command, env=env)
    assert first.returncode == 0, first.stderr
    dropped = [e for e in server.journal() if e["endpoint"] == "faceset/group/add"
               and is_lock_group(e["params"]["group_id"])]
    assert len({e["params"]["group_id"] for e in dropped}) < len(dropped)  # some lock group/add was re-sent
    second = run_facesync(*command, env=env)
    assert second.returncode == 0, second.stderr
    assert "locked" not in second.stderr and "No changes" in second.stdout
    with LocalLibrary(server.db) as library:
        assert lock_groups(library) == []


def test_acquisition_that_fails_midway_removes_what_it_made(serve, tmp_path):
    faults = tmp_path / "faults.yaml"
    faults.write_text(yaml.safe_dump({"faults": [
        {"kind": "error", "rate": 1.0, "codes": [6], "endpoints": ["faceset/group/getlist"]}]}))
    server = serve("--faults", str(faults))
    with pytest.raises(Exception, match="6"):
        GroupLock(client_for(server)).acquire()
    made = [e["params"]["group_id"] for e in server.journal() if e["endpoint"] == "faceset/group/add"]
    deleted = [e["params"]["group_id"] for e in server.journal() if e["endpoint"] == "faceset/group/delete"]
    assert made and deleted == made  # the candidate group was made, then removed on the way out
    with LocalLibrary(server.db) as library:
        assert lock_groups(library) == []


class _Rendezvous:
    """A library whose first group/getlist waits for the other contender's: both list after both applied."""

    def __init__(self, library, barrier: threading.Barrier):
        self._library, self._barrier, self._waited = library, barrier, False

    def __getattr__(self, name):
        return getattr(self._library, name)

    def group_getlist(self, *args, **kwargs):
        if not self._waited:
            self._waited = True
            self._barrier.wait(30)
        return self._library.group_getlist(*args, **kwargs)


def test_the_loser_of_a_takeover_race_is_told_who_took_the_lock(serve):
    server = serve()
    dead_holder(client_for(server), expires=time.time() - 1, pid=4242)
    barrier = threading.Barrier(2)
    winner = GroupLock(_Rendezvous(client_for(server), barrier))
    loser = GroupLock(_Rendezvous(client_for(server), barrier))
    winner.nonce, loser.nonce = "000000", "zzzzzz"  # the smaller nonce wins a tie
    outcome: dict[str, object] = {}

    def contend(name, lock):
        try:
            outcome[name] = lock.acquire()
        except LockHeldError as error:
            outcome[name] = error

    threads = [threading.Thread(target=contend, args=item) for item in (("winner", winner), ("loser", loser))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert isinstance(outcome["winner"], LockHolder), outcome
    message = str(outcome["loser"])  # the truth: another apply is taking it, not a dead holder to break
    assert "another apply is taking the lock" in message and f"pid {os.getpid()}" in message
    assert "4242" not in message and "--break-lock" not in message
    assert [parse_lock_group(g).nonce for g in lock_groups(client_for(server))] == ["000000"]
    winner.release()


def test_a_holder_that_appears_while_taking_over_is_reported_as_having_taken_it_just_now(serve):
    server = serve()
    client = client_for(server)
    dead_holder(client, expires=time.time() - 1, pid=4242)
    other = LockHolder("otherhost", 555, None, time.time() + 3600, "zzzzzz")
    other_candidate = lock_group_id(other, holding=False, local=False)
    client.group_add(other_candidate)  # the other apply listed before our candidate existed

    class TakenMeanwhile(_Rendezvous):  # ... and finishes taking the lock right after our first listing
        def group_getlist(self, *args, **kwargs):
            answer = self._library.group_getlist(*args, **kwargs)
            if not self._waited:
                self._waited = True
                client.group_add(lock_group_id(other, holding=True, local=False))
                client.group_delete(other_candidate)
            return answer

    lock = GroupLock(TakenMeanwhile(client, None))
    lock.nonce = "000000"  # it would win a tie: it gives way because the other one already holds
    with pytest.raises(LockHeldError) as lost:
        lock.acquire()
    message = str(lost.value)
    assert "took the lock" in message and "just now" in message and "pid 555 on host otherhost" in message
    assert "4242" not in message and "--break-lock" not in message
    assert [parse_lock_group(g).nonce for g in lock_groups(client)] == ["zzzzzz"]


def test_a_contender_stuck_halfway_is_reported_with_its_expiry(serve):
    server = serve()
    client = client_for(server)
    stuck = LockHolder("stuckhost", 777, None, time.time() + 600, "zzzzzz")
    client.group_add(lock_group_id(stuck, holding=False, local=False))
    lock = GroupLock(client, race_window=0.3)
    lock.nonce = "000000"
    with pytest.raises(LockHeldError) as lost:
        lock.acquire()
    message = str(lost.value)
    assert "has not finished" in message and "pid 777 on host stuckhost" in message and "expires" in message
    assert "--break-lock" in message
    with library_lock(parse_target(server.base_url), client, break_lock=True):
        pass
    assert lock_groups(client) == []


def test_concurrent_contenders_never_hold_the_lock_together(serve):
    server = serve()
    inside, overlaps, held = [0], [], []
    guard = threading.Lock()

    def contend():
        lock = GroupLock(client_for(server), sleep=lambda s: time.sleep(min(s, 0.2)))
        holder = lock.acquire(timeout=120)
        with guard:
            inside[0] += 1
            overlaps.append(inside[0])
        time.sleep(0.05)
        with guard:
            inside[0] -= 1
            held.append(holder.lock_id)
        lock.release()

    threads = [threading.Thread(target=contend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(held) == 4 and max(overlaps) == 1
    assert lock_groups(client_for(server)) == []


# ---- one lock for a local library, however it is reached -------------------------------------------


def test_local_lock_excludes_a_second_holder_and_names_the_first(tmp_path):
    spec = parse_target(f"local:{tmp_path / 'lib.db'}")
    with LocalLibrary(str(tmp_path / "lib.db")) as library:
        with library_lock(spec, library) as me:
            assert LockHolder.from_json((tmp_path / "lib.db.lock").read_text()).pid == me.pid
            [group] = read_lock_groups(library)
            assert group.local and group.holding and group.nonce == me.lock_id
            with pytest.raises(LockHeldError) as held, library_lock(spec, library):
                pass
            assert f"pid {me.pid}" in str(held.value) and "--lock-timeout" in str(held.value)
            assert "--break-lock" not in str(held.value)
        assert lock_groups(library) == []
        with library_lock(spec, library):  # released
            pass


def test_local_lock_waits_for_the_holder_within_the_timeout(tmp_path):
    spec = parse_target(f"local:{tmp_path / 'lib.db'}")
    released = threading.Event()
    ready = threading.Event()

    def hold():
        with LocalLibrary(str(tmp_path / "lib.db")) as library, library_lock(spec, library):
            ready.set()
            time.sleep(0.5)
        released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    ready.wait(5)
    with LocalLibrary(str(tmp_path / "lib.db")) as library, library_lock(spec, library, timeout=10):
        assert released.is_set()
    holder.join()


HOLD = """
import sys
from facesync.manifest import load
from facesync.lock import library_lock
from facesync.targets import parse_target
from facesync.targets import open_target
spec = parse_target(sys.argv[1])
library = open_target(spec)
with library_lock(spec, library) as me:
    print("held", me.pid, flush=True)
    sys.stdin.read()
"""


def hold_lock(target: str, env: dict) -> subprocess.Popen:
    """Another process holding the apply lock of ``target`` until its stdin closes."""
    process = subprocess.Popen([sys.executable, "-c", HOLD, target], env=env, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    assert line.startswith("held"), process.stderr.read()
    return process


def apply_quickstart(tmp_path, target: str, env: dict) -> subprocess.CompletedProcess:
    manifest = tmp_path / "quickstart"
    if not manifest.exists():
        shutil.copytree(QUICKSTART, manifest)
    return run_facesync("apply", str(manifest / "faceset.yaml"), "--yes", "--target", target,
                        env={**env, "FACESYNC_CACHE_DIR": str(tmp_path / "cache")})


def test_an_apply_on_the_file_and_one_through_serve_exclude_each_other(serve, tmp_path):
    db = str(tmp_path / "shared.db")
    server = serve(db=db)
    env = server.env()
    del env["FACESYNC_TARGET"]

    over_http = hold_lock(server.base_url, env)
    refused = apply_quickstart(tmp_path, f"local:{db}", env)
    assert refused.returncode == 1 and "locked by another apply" in refused.stderr
    assert f"pid {over_http.pid}" in refused.stderr
    over_http.communicate("")

    on_file = hold_lock(f"local:{db}", env)
    refused = apply_quickstart(tmp_path, server.base_url, env)
    assert refused.returncode == 1 and "locked by another apply" in refused.stderr
    assert f"pid {on_file.pid}" in refused.stderr and "library file itself" in refused.stderr
    on_file.send_signal(signal.SIGKILL)  # killed: its lock group stays, its file lock goes
    on_file.wait(10)

    done = apply_quickstart(tmp_path, f"local:{db}", env)  # holding the file lock proves the holder dead
    assert done.returncode == 0, done.stderr
    hold_lock(server.base_url, env).communicate("")  # and the lock is free for clients of serve again
    with LocalLibrary(db) as library:
        assert lock_groups(library) == []
        assert {"staff", "visitors"} <= set(library.group_getlist().ids)
