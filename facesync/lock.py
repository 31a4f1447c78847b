"""One apply per library at a time.

- Local library (``local:PATH``): an OS lock (``flock``) on ``PATH.lock`` beside the database, with the
  holder (host, pid, time) written into the file for the message others get. The OS frees it when the
  holder dies, even by kill -9, so a local lock is never stale and ``--break-lock`` has nothing to do.
- Remote library: facesync's own marker group ``LOCK_GROUP_ID``. ``group/add`` is the atomic test-and-set
  (223101 while someone holds it). The holder and an expiry are kept as the user_info of the user
  ``holder`` in that group (user/add needs an image: a built-in 1×1 PNG). The holder renews the expiry
  every third of its lifetime while it runs, so only a dead holder's lock expires.
- Choices: an expired lock is taken over (its holder record is overwritten, then read back to make sure
  this run won); a lock whose holder was never recorded (a holder killed between the two calls, or a
  server that refuses the built-in image) never expires on its own and needs ``--break-lock``, which
  deletes the marker group (Terraform's force-unlock). ``--lock-timeout S`` waits up to S seconds,
  polling; the default 0 stops at once with the holder's details (``LockHeldError``). Release happens
  in ``finally`` (also on Ctrl-C) and never deletes a lock that another run has taken over.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from facesync.api.errors import AlreadyExistsError, FaceApiError, ImageRejectedError, NotFoundError
from facesync.api.protocol import USER_INFO_MAX_BYTES, FaceLibrary, Image
from facesync.errors import ConfigError, LockHeldError
from facesync.model import LOCK_GROUP_ID
from facesync.targets import TargetSpec

log = logging.getLogger(__name__)

DEFAULT_TTL = 3600.0
HOLDER_USER_ID = "holder"
POLL_SECONDS = 1.0
# A 1×1 grey PNG: the image user/add needs to create the holder record.
MARKER_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNoAAAAggCBd81ytgAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: enough for a person to find that run, and to tell whether it is stale."""

    host: str
    pid: int
    since: float  # unix time
    expires: float | None = None  # unix time; None: never expires on its own (local locks, unknown)
    lock_id: str = ""

    def to_json(self) -> str:
        data = {"host": self.host[:64], "pid": self.pid, "since": round(self.since, 3),
                "expires": None if self.expires is None else round(self.expires, 3), "id": self.lock_id}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LockHolder | None:
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), float(data["since"]),
                       None if data.get("expires") is None else float(data["expires"]), str(data.get("id", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def describe(self) -> str:
        text = f"pid {self.pid} on host {self.host} since {_when(self.since)}"
        return text + (f", expires {_when(self.expires)}" if self.expires is not None else "")


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _me(ttl: float | None) -> LockHolder:
    now = time.time()
    return LockHolder(socket.gethostname(), os.getpid(), now, None if ttl is None else now + ttl,
                      uuid.uuid4().hex[:12])


def _held_error(where: str, holder: LockHolder | None, waited: float, *, breakable: bool) -> LockHeldError:
    who = holder.describe() if holder else "a holder that has not recorded itself (yet)"
    waited_text = f" (waited {waited:.0f} s)" if waited >= 1 else ""
    hint = "wait for that apply to end, or pass --lock-timeout SECONDS to wait for it"
    if breakable:
        hint += "; if it is dead (killed, crashed), remove its lock with --break-lock"
    return LockHeldError(f"{where} is locked by another apply: {who}{waited_text}", hint=hint)


@contextmanager
def library_lock(spec: TargetSpec, library: FaceLibrary | None = None, *, timeout: float = 0.0,
                 break_lock: bool = False, ttl: float = DEFAULT_TTL,
                 sleep: Callable[[float], None] = time.sleep) -> Iterator[LockHolder]:
    """Hold the library's apply lock for the ``with`` block; raises ``LockHeldError`` when it is taken."""
    if spec.is_local:
        with _local_lock(os.path.abspath(spec.location) + ".lock", timeout=timeout, break_lock=break_lock,
                         sleep=sleep) as holder:
            yield holder
        return
    if library is None:
        raise ConfigError("a remote library lock needs the opened library")
    lock = RemoteLock(library, ttl=ttl, sleep=sleep)
    holder = lock.acquire(timeout=timeout, break_lock=break_lock)
    try:
        yield holder
    finally:
        lock.release()


# ---- local: flock ----------------------------------------------------------------------------------


@contextmanager
def _local_lock(path: str, *, timeout: float, break_lock: bool,
                sleep: Callable[[float], None]) -> Iterator[LockHolder]:
    import fcntl

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise ConfigError(f"cannot open the lock file {path}: {error.strerror}") from None
    try:
        started = time.monotonic()
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= timeout:
                    holder = _read_local_holder(fd)
                    if break_lock:
                        log.warning("--break-lock: the local lock belongs to a live process (%s); the OS frees"
                                    " it when that process ends, so it cannot be broken",
                                    holder.describe() if holder else "unknown")
                    raise _held_error(f"the local library {path[:-len('.lock')]}", holder, waited,
                                      breakable=False) from None
                sleep(min(POLL_SECONDS, max(0.05, timeout - waited)))
        me = _me(None)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (me.to_json() + "\n").encode(), 0)
        try:
            yield me
        finally:
            try:
                os.ftruncate(fd, 0)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_local_holder(fd: int) -> LockHolder | None:
    try:
        return LockHolder.from_json(os.pread(fd, 4096, 0).decode("utf-8", "replace").strip())
    except OSError:
        return None


# ---- remote: marker group --------------------------------------------------------------------------


class RemoteLock:
    """The marker-group lock of a remote library, with its renewal thread."""

    def __init__(self, library: FaceLibrary, *, ttl: float = DEFAULT_TTL, sleep: Callable[[float], None] = time.sleep):
        self.library = library
        self.ttl = ttl
        self.sleep = sleep
        self.holder: LockHolder | None = None
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def acquire(self, *, timeout: float = 0.0, break_lock: bool = False) -> LockHolder:
        started = time.monotonic()
        where = f"the library {self.library.identity}"
        while True:
            me = _me(self.ttl)
            try:
                self.library.group_add(LOCK_GROUP_ID)
            except AlreadyExistsError as error:
                if error.error_code != 223101:
                    raise
                current = self.read_holder()
                if break_lock:
                    break_lock = False
                    log.warning("--break-lock: removing the lock of %s held by %s", where,
                                current.describe() if current else "an unrecorded holder")
                    self._delete_group()
                    continue
                if current is not None and current.expired(time.time()) and self._take_over(me):
                    log.warning("took over the expired lock of %s (%s)", where, current.describe())
                    break
                waited = time.monotonic() - started
                if waited >= timeout:
                    raise _held_error(where, current, waited, breakable=True) from None
                self.sleep(min(POLL_SECONDS, max(0.05, timeout - waited)))
                continue
            self._record(me, create=True)
            break
        self.holder = me
        self._start_renewal()
        return me

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
        if self.holder is None:
            return
        try:
            current = self.read_holder()
            if current is not None and current.lock_id != self.holder.lock_id:
                log.warning("the lock was taken over by %s; leaving it in place", current.describe())
                return
            self._delete_group()
        except FaceApiError as error:
            log.warning("could not release the lock of %s: %s (remove it with --break-lock)",
                        self.library.identity, error)
        finally:
            self.holder = None

    def read_holder(self) -> LockHolder | None:
        try:
            record = self.library.user_get(LOCK_GROUP_ID, HOLDER_USER_ID)
        except NotFoundError:
            return None
        infos = [m.user_info for m in record.memberships if m.group_id == LOCK_GROUP_ID]
        return LockHolder.from_json(infos[0]) if infos else None

    def _record(self, holder: LockHolder, *, create: bool) -> bool:
        """Write ``holder`` as the lock's record; False when the server refuses the marker image."""
        info = holder.to_json()[:USER_INFO_MAX_BYTES]
        image = Image.from_bytes(MARKER_PNG)
        try:
            if create:
                self.library.user_add(LOCK_GROUP_ID, HOLDER_USER_ID, image, user_info=info)
            else:
                self.library.user_update(LOCK_GROUP_ID, HOLDER_USER_ID, image, user_info=info)
        except AlreadyExistsError:  # the same marker face already there: set the record by update
            self.library.user_update(LOCK_GROUP_ID, HOLDER_USER_ID, image, user_info=info)
        except NotFoundError:
            if create:
                raise
            self.library.user_add(LOCK_GROUP_ID, HOLDER_USER_ID, image, user_info=info)
        except ImageRejectedError as error:
            log.info("the lock is held, but its holder cannot be recorded: %s", error)
            return False
        return True

    def _take_over(self, me: LockHolder) -> bool:
        try:
            if not self._record(me, create=False):
                return False
        except NotFoundError:  # released meanwhile: try group/add again
            return False
        current = self.read_holder()
        return current is not None and current.lock_id == me.lock_id

    def _delete_group(self) -> None:
        try:
            self.library.group_delete(LOCK_GROUP_ID)
        except NotFoundError:
            pass

    def _start_renewal(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="facesync-lock-renewal", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        interval = max(1.0, self.ttl / 3)
        while not self._stop.wait(interval):
            holder = self.holder
            if holder is None:
                return
            try:
                current = self.read_holder()
            except FaceApiError as error:
                log.warning("could not read the apply lock to renew it: %s", error)
                continue
            if current is not None and current.lock_id != holder.lock_id:
                log.warning("the apply lock was taken over by %s", current.describe())
                return
            renewed = LockHolder(holder.host, holder.pid, holder.since, time.time() + self.ttl, holder.lock_id)
            try:
                if self._record(renewed, create=False):
                    self.holder = renewed
            except FaceApiError as error:
                log.warning("could not renew the apply lock: %s", error)
