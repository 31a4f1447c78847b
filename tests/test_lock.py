"""The apply lock: a flock beside a local library, a marker group on a remote one."""

from __future__ import annotations

import threading
import time

import pytest

from facesync.api.baidu import BaiduClient
from facesync.errors import LockHeldError
from facesync.lock import HOLDER_USER_ID, LockHolder, RemoteLock, library_lock
from facesync.model import LOCK_GROUP_ID
from facesync.targets import parse_target


def client_for(server) -> BaiduClient:
    return BaiduClient(server.base_url, server.api_key, server.secret_key, qps=None)


def test_local_lock_excludes_a_second_holder_and_names_the_first(tmp_path):
    spec = parse_target(f"local:{tmp_path / 'lib.db'}")
    with library_lock(spec) as me:
        assert (tmp_path / "lib.db.lock").read_text().strip() == me.to_json()
        with pytest.raises(LockHeldError) as held, library_lock(spec):
            pass
        assert f"pid {me.pid}" in str(held.value) and "--lock-timeout" in str(held.value)
    with library_lock(spec):  # released
        pass


def test_local_lock_waits_for_the_holder_within_the_timeout(tmp_path):
    spec = parse_target(f"local:{tmp_path / 'lib.db'}")
    released = threading.Event()

    def hold():
        with library_lock(spec):
            ready.set()
            time.sleep(0.5)
        released.set()

    ready = threading.Event()
    holder = threading.Thread(target=hold)
    holder.start()
    ready.wait(5)
    with library_lock(spec, timeout=10):
        assert released.is_set()
    holder.join()


def test_remote_lock_is_exclusive_reports_holder_and_is_released(serve):
    server = serve()
    first, second = client_for(server), client_for(server)
    spec = parse_target(server.base_url)
    with library_lock(spec, first) as me:
        assert LOCK_GROUP_ID in first.group_getlist().ids
        with pytest.raises(LockHeldError) as held, library_lock(spec, second):
            pass
        assert f"pid {me.pid}" in str(held.value) and "--break-lock" in str(held.value)
    assert LOCK_GROUP_ID not in first.group_getlist().ids
    with library_lock(spec, second):
        pass


def test_remote_lock_of_a_dead_holder_needs_break_lock_unless_expired(serve):
    server = serve()
    dead = RemoteLock(client_for(server), ttl=3600)
    dead.acquire()
    dead._stop.set()  # the holder "dies": it never releases
    spec = parse_target(server.base_url)
    live = client_for(server)
    with pytest.raises(LockHeldError), library_lock(spec, live):
        pass
    with library_lock(spec, live, break_lock=True) as me:
        assert RemoteLock(live).read_holder().lock_id == me.lock_id

    expired = RemoteLock(client_for(server), ttl=0.5)
    expired.acquire()
    expired._stop.set()
    time.sleep(0.6)
    with library_lock(spec, live, timeout=0) as me:  # an expired lock is taken over
        assert RemoteLock(live).read_holder().lock_id == me.lock_id
    expired.holder = None  # the dead holder must not release what is no longer its lock


def test_remote_lock_waits_then_takes_it(serve):
    server = serve()
    spec = parse_target(server.base_url)
    holder = RemoteLock(client_for(server))
    holder.acquire()
    threading.Timer(0.5, holder.release).start()
    started = time.monotonic()
    with library_lock(spec, client_for(server), timeout=15, sleep=lambda s: time.sleep(min(s, 0.1))):
        assert time.monotonic() - started >= 0.4


def test_holder_record_round_trips_and_fits_user_info():
    holder = LockHolder("h" * 300, 123, 1700000000.0, 1700003600.0, "abc")
    text = holder.to_json()
    assert len(text.encode()) <= 256
    back = LockHolder.from_json(text)
    assert back.pid == 123 and back.expired(1700003600.0) and not back.expired(1700000001.0)
    assert LockHolder.from_json("not json") is None
    assert HOLDER_USER_ID.isidentifier()
