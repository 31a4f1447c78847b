"""One apply per library at a time, however the library is reached.

The lock lives in the library itself, as groups whose ids start with ``LOCK_GROUP_PREFIX`` (see model.py):
a group id can carry what the lock needs (``[A-Za-z0-9_]``, at most 48 bytes), so no image is uploaded
and nothing depends on how the service treats users, faces or user_info. Each apply writes its own
groups, named ``_facesync_lock_<state><origin><expiry>_<nonce>_<pid>_<host>``:

- state ``c`` (candidate: it wants the lock) or ``h`` (holder: it has it); origin ``l`` when written by
  an apply that also holds the file lock of a local library, ``r`` otherwise; expiry in base 36 unix
  seconds; a random nonce that makes the id unique and orders contenders; the pid in base 36; the host
  name shortened to what fits.
- Acquire: create the own candidate group, list the lock groups, remove expired ones (a dead holder's),
  then: any other holder, or a candidate with a smaller nonce, wins (withdraw: delete the own candidate);
  candidates with a larger nonce withdraw when they see us, so wait a moment for them to go; alone,
  create the own holder group, then delete the candidate. A candidate stays until its holder group
  exists, so every contender that lists sees one or the other: two applies never both hold the lock,
  and the smaller nonce wins a tie (Burns' one-bit mutual exclusion over create/list/delete).
- The holder is recorded before the lock is relied on: the holder group is the lock. Ids are unique,
  so 223101 on the own group/add (a lost answer, retried) means "already made by us", and 223100 on the
  own group/delete means "already gone". Acquisition that gives up (lock held, error, Ctrl-C) deletes
  whatever it created.
- Expiry: the holder renews every third of its lifetime (a new holder group with a later expiry, then the
  old one deleted), so only a dead holder's lock expires; expired lock groups are removed by the next
  apply. A lock group that does not parse (an older facesync's ``_facesync_lock``) never expires and
  needs ``--break-lock``, which deletes every other lock group (Terraform's force-unlock).
- The one that gives way is told the truth: a holder that was there before it looked (wait, or
  ``--break-lock`` if that apply is dead), a lock taken just now or being taken by a live apply (wait; no
  advice to break it), or a contender stuck halfway (its claim expires in ``CANDIDATE_TTL``).
- Relies on: ``group/getlist`` showing every group whose ``group/add`` was answered (the contract's
  linearizable library; true of the local library), and clocks of contending hosts within
  ``CANDIDATE_TTL`` of each other (expiry is compared across hosts).

A local library (``local:PATH``) is reachable two ways: directly, and through ``facesync serve --db PATH``.
A local apply takes an OS lock (``flock`` on ``PATH.lock``, freed by the OS even after kill -9, with the
holder written into the file) *and* the group lock through the library interface, with origin ``l``.
Clients of ``facesync serve`` take the group lock over HTTP, so both kinds of apply exclude each other
through the same SQLite file, and ``serve`` needs to know nothing about locks. Holding the file lock
proves that every other local holder is dead, so a local apply removes stale ``l`` groups at once: a
killed local apply never blocks the next one. ``--lock-timeout S`` waits up to S seconds, polling; the
default 0 stops at once with the holder's details (``LockHeldError``). Release happens in ``finally``
(also on Ctrl-C) and never deletes another apply's lock groups.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from facesync.api.errors import FaceApiError, GroupExistsError, GroupNotFoundError
from facesync.api.protocol import GROUP_ID_MAX_BYTES, FaceLibrary, iter_group_ids
from facesync.errors import ConfigError, LockHeldError
from facesync.model import LOCK_GROUP_PREFIX, is_lock_group
from facesync.targets import TargetSpec

log = logging.getLogger(__name__)

DEFAULT_TTL = 3600.0
# A candidate group lives for a few calls; its expiry only frees a library whose contender was killed
# between two calls. It is long against clock skew between hosts, which expiry comparisons depend on.
CANDIDATE_TTL = 600.0
# How long a contender waits for candidates with a larger nonce to withdraw (they do so on their next
# listing) before taking them for stuck ones and giving way.
RACE_WINDOW = 10.0
POLL_SECONDS = 1.0
RACE_POLL_SECONDS = 0.2
NONCE_LENGTH = 6
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_FIELDS = re.compile(r"_([ch])([lr])([0-9a-z]{1,8})_([0-9a-z]+)_([0-9a-z]+)_([A-Za-z0-9_]*)")


@dataclass(frozen=True)
class LockHolder:
    """Who holds a lock: enough for a person to find that run, and to tell whether it is stale."""

    host: str
    pid: int
    since: float | None = None  # unix time; known for the local file lock only
    expires: float | None = None  # unix time; None: never expires on its own
    lock_id: str = ""  # the nonce of a group lock

    def to_json(self) -> str:
        data = {"host": self.host[:64], "pid": self.pid, "since": None if self.since is None else round(self.since, 3),
                "expires": None if self.expires is None else round(self.expires, 3), "id": self.lock_id}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LockHolder | None:
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]),
                       None if data.get("since") is None else float(data["since"]),
                       None if data.get("expires") is None else float(data["expires"]), str(data.get("id", "")))
        except (ValueError, KeyError, TypeError):
            return None

    def expired(self, now: float) -> bool:
        return self.expires is not None and now >= self.expires

    def describe(self) -> str:
        text = f"pid {self.pid} on host {self.host}"
        text += f" since {_when(self.since)}" if self.since is not None else ""
        return text + (f", lock expires {_when(self.expires)}" if self.expires is not None else "")


@dataclass(frozen=True)
class LockGroup:
    """One lock group as read from the library; ``holder`` None: not written by this facesync."""

    group_id: str
    holder: LockHolder | None
    holding: bool = True  # a holder group, not a candidate
    local: bool = False  # written by an apply that holds the local library's file lock

    @property
    def nonce(self) -> str:
        return self.holder.lock_id if self.holder else ""

    def expired(self, now: float) -> bool:
        return self.holder is not None and self.holder.expired(now)

    def describe(self) -> str:
        if self.holder is None:
            return f"a lock group {self.group_id} of unknown origin that never expires"
        origin = " (an apply on the library file itself)" if self.local else ""
        return self.holder.describe() + origin


def _when(moment: float) -> str:
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _ALPHABET[digit] + digits
        if not number:
            return digits


def lock_group_id(holder: LockHolder, *, holding: bool, local: bool) -> str:
    """The group id that records ``holder``; pure, and always a valid group id within the length limit."""
    head = (f"{LOCK_GROUP_PREFIX}_{'h' if holding else 'c'}{'l' if local else 'r'}"
            f"{_base36(int(holder.expires or 0))}_{holder.lock_id}_{_base36(holder.pid)}_")
    host = re.sub(r"[^A-Za-z0-9]+", "_", holder.host).strip("_")
    return head + host[:max(0, GROUP_ID_MAX_BYTES - len(head))]


def parse_lock_group(group_id: str) -> LockGroup:
    found = _FIELDS.fullmatch(group_id[len(LOCK_GROUP_PREFIX):]) if is_lock_group(group_id) else None
    if not found:
        return LockGroup(group_id, None)
    state, origin, expires, nonce, pid, host = found.groups()
    holder = LockHolder(host or "?", int(pid, 36), None, float(int(expires, 36)), nonce)
    return LockGroup(group_id, holder, holding=state == "h", local=origin == "l")


def read_lock_groups(library: FaceLibrary) -> list[LockGroup]:
    return [parse_lock_group(group_id) for group_id in iter_group_ids(library) if is_lock_group(group_id)]


def _me(ttl: float | None, nonce: str = "") -> LockHolder:
    now = time.time()
    return LockHolder(socket.gethostname(), os.getpid(), now, None if ttl is None else now + ttl, nonce)


# Why an acquisition gave way: each tells the person the truth about the other apply.
HELD, TAKEN, TAKING, STUCK = "held", "taken", "taking", "stuck"


def _held_error(where: str, blockers: Iterable[LockGroup], waited: float, reason: str) -> LockHeldError:
    who = "; ".join(dict.fromkeys(group.describe() for group in blockers)) or "an unknown holder"
    waited_text = f" (waited {waited:.0f} s)" if waited >= 1 else ""
    hint = "wait for that apply to end, or pass --lock-timeout SECONDS to wait for it"
    if reason == TAKEN:
        return LockHeldError(f"another apply took the lock of {where} just now: {who}{waited_text}", hint=hint)
    if reason == TAKING:
        return LockHeldError(f"another apply is taking the lock of {where} right now: {who}{waited_text}",
                             hint=hint)
    hint += "; if it is dead (killed, crashed), remove its lock with --break-lock"
    if reason == STUCK:
        return LockHeldError(f"another apply started taking the lock of {where} and has not finished: "
                             f"{who}{waited_text}", hint=hint)
    return LockHeldError(f"{where} is locked by another apply: {who}{waited_text}", hint=hint)


@contextmanager
def library_lock(spec: TargetSpec, library: FaceLibrary | None = None, *, timeout: float = 0.0,
                 break_lock: bool = False, ttl: float = DEFAULT_TTL,
                 sleep: Callable[[float], None] = time.sleep) -> Iterator[LockHolder]:
    """Hold the library's apply lock for the ``with`` block; raises ``LockHeldError`` when it is taken."""
    if library is None:
        raise ConfigError("the apply lock needs the opened library")
    started = time.monotonic()
    if spec.is_local:
        with _local_lock(os.path.realpath(spec.location) + ".lock", timeout=timeout, sleep=sleep):
            remaining = max(0.0, timeout - (time.monotonic() - started))
            with _group_lock(library, local=True, timeout=remaining, break_lock=break_lock, ttl=ttl,
                             sleep=sleep) as holder:
                yield holder
        return
    with _group_lock(library, local=False, timeout=timeout, break_lock=break_lock, ttl=ttl, sleep=sleep) as holder:
        yield holder


@contextmanager
def _group_lock(library: FaceLibrary, *, local: bool, timeout: float, break_lock: bool, ttl: float,
                sleep: Callable[[float], None]) -> Iterator[LockHolder]:
    lock = GroupLock(library, ttl=ttl, sleep=sleep, local=local)
    holder = lock.acquire(timeout=timeout, break_lock=break_lock)
    try:
        yield holder
    finally:
        lock.release()


# ---- local: flock ----------------------------------------------------------------------------------


@contextmanager
def _local_lock(path: str, *, timeout: float, sleep: Callable[[float], None]) -> Iterator[LockHolder]:
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
                    who = holder.describe() if holder else "a holder that has not recorded itself yet"
                    waited_text = f" (waited {waited:.0f} s)" if waited >= 1 else ""
                    raise LockHeldError(
                        f"the local library {path[:-len('.lock')]} is locked by another apply: {who}{waited_text}",
                        hint="wait for that apply to end, or pass --lock-timeout SECONDS to wait for it (the "
                             "system frees this lock when its holder ends, so there is nothing to break)",
                    ) from None
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


# ---- the group lock ----------------------------------------------------------------------------------


class _Lost(Exception):
    """This attempt gave way to ``blockers`` (lock groups of other applies), for ``reason``."""

    def __init__(self, blockers: list[LockGroup], reason: str):
        super().__init__()
        self.blockers = blockers
        self.reason = reason


class GroupLock:
    """The lock groups of one apply in one library, with the thread that renews them."""

    def __init__(self, library: FaceLibrary, *, ttl: float = DEFAULT_TTL, sleep: Callable[[float], None] = time.sleep,
                 local: bool = False, race_window: float = RACE_WINDOW):
        self.library = library
        self.ttl = ttl
        self.race_window = race_window
        self.sleep = sleep
        self.local = local
        self.nonce = "".join(secrets.choice(_ALPHABET) for _ in range(NONCE_LENGTH))
        self.holder: LockHolder | None = None
        self.holder_group: str | None = None
        self._made: set[str] = set()  # every group this lock may have created and not yet deleted
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._guard = threading.Lock()  # renewal and release change holder_group

    @property
    def where(self) -> str:
        return f"the library {self.library.identity}"

    def acquire(self, *, timeout: float = 0.0, break_lock: bool = False) -> LockHolder:
        started = time.monotonic()
        try:
            if break_lock:
                self._break()
            while True:
                try:
                    self._attempt()
                    break
                except _Lost as lost:
                    self._withdraw()
                    waited = time.monotonic() - started
                    if waited >= timeout:
                        raise _held_error(self.where, lost.blockers, waited, lost.reason) from None
                    self.sleep(min(POLL_SECONDS, max(0.05, timeout - waited)))
        except BaseException:  # held, failed or interrupted: leave nothing half-made behind
            self._withdraw()
            raise
        self._start_renewal()
        return self.holder

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=10)
        with self._guard:
            if self.holder_group is not None and self.holder_group not in {g.group_id for g in self._read()}:
                log.warning("the apply lock of %s was removed while this apply held it (--break-lock or expiry)",
                            self.where)
            self._withdraw()
            self.holder = self.holder_group = None

    # -- the steps

    def _attempt(self) -> None:
        candidate = self._make(_me(CANDIDATE_TTL, self.nonce), holding=False)
        first = None
        race = False
        deadline = time.monotonic() + self.race_window
        while True:
            groups = [g for g in self._read() if g.nonce != self.nonce]
            now = time.time()
            for group in (g for g in groups if g.expired(now)):
                race = True  # whoever else saw this expired lock is taking it over too
                log.warning("removing the expired apply lock of %s: %s", self.where, group.describe())
                self._delete(group.group_id)
            live = [g for g in groups if not g.expired(now)]
            if self.local:
                stale = [g for g in live if g.local]
                for group in stale:
                    log.info("removing the lock of a local apply that has ended: %s", group.describe())
                    self._delete(group.group_id)
                live = [g for g in live if not g.local]
            first = {g.group_id for g in live} if first is None else first
            holders = [g for g in live if g.holding or g.holder is None]
            if holders:
                raise _Lost(holders, TAKEN if race or any(g.group_id not in first for g in holders) else HELD)
            smaller = [g for g in live if g.nonce < self.nonce]
            if smaller:
                raise _Lost(smaller, TAKING)
            if not live:
                break
            if time.monotonic() >= deadline:  # candidates that neither withdraw nor hold: stuck, give way
                raise _Lost(live, STUCK)
            self.sleep(RACE_POLL_SECONDS)
        me = _me(self.ttl, self.nonce)
        self.holder_group = self._make(me, holding=True)
        self.holder = me
        self._delete(candidate)

    def _break(self) -> None:
        for group in self._read():
            if group.nonce != self.nonce:
                log.warning("--break-lock: removing the apply lock of %s: %s", self.where, group.describe())
                self._delete(group.group_id)

    def _make(self, holder: LockHolder, *, holding: bool) -> str:
        group_id = lock_group_id(holder, holding=holding, local=self.local)
        self._made.add(group_id)
        try:
            self.library.group_add(group_id)
        except GroupExistsError:
            pass  # the id is unique to this apply: an earlier try whose answer was lost made it
        except FaceApiError:
            if group_id not in set(iter_group_ids(self.library)):  # did the call land before failing?
                raise
        return group_id

    def _delete(self, group_id: str) -> None:
        try:
            self.library.group_delete(group_id)
        except GroupNotFoundError:
            pass  # gone already: removed by someone else, or an earlier try whose answer was lost
        self._made.discard(group_id)

    def _read(self) -> list[LockGroup]:
        return read_lock_groups(self.library)

    def _withdraw(self) -> None:
        for group_id in sorted(self._made):
            try:
                self._delete(group_id)
            except FaceApiError as error:
                log.warning("could not remove the apply lock group %s of %s: %s (it expires on its own; "
                            "or remove it with --break-lock)", group_id, self.where, error)

    # -- renewal

    def _start_renewal(self) -> None:
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew_loop, name="facesync-lock-renewal", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        interval = max(1.0, self.ttl / 3)
        while not self._stop.wait(interval):
            try:
                if not self.renew():
                    return
            except FaceApiError as error:
                log.warning("could not renew the apply lock of %s: %s", self.where, error)

    def renew(self) -> bool:
        """Move the expiry forward; False when the lock is no longer this apply's (removed or taken over)."""
        with self._guard:
            if self.holder is None:
                return False
            if self.holder_group not in {g.group_id for g in self._read()}:
                log.warning("the apply lock of %s was removed while this apply held it (--break-lock or expiry)",
                            self.where)
                return False
            old = self.holder_group
            renewed = LockHolder(self.holder.host, self.holder.pid, self.holder.since, time.time() + self.ttl,
                                 self.nonce)
            self.holder_group = self._make(renewed, holding=True)
            self.holder = renewed
            if old != self.holder_group:
                self._delete(old)
            return True
