"""The state: the library as facesync last read or wrote it, so that an incremental refresh can trust
what it read recently and re-read only what may have moved.

One JSON file per target, ``state-<sha256(identity)[:16]>.json`` in the cache folder (``cache.py``), or
any file given with ``--state FILE`` (CI keeps it beside the token cache). It holds, for each
(group, user) of the managed groups that facesync read: its face_tokens and user_info (None: not read),
``verified_at`` (when the read that produced these facts *began*), and ``entry`` (a digest of the
manifest's entry for that user when it was read), or a tombstone (``gone``) for a user a listing found
missing. Ids, face_tokens and user_info only: never a key, a secret or an access token.

Choices, and why:

- A fact is never made to look fresher than it is. ``verified_at`` is the start of the read, not its
  end, and a write by ``apply`` keeps the time of the read its plan was made from (the written facts
  are that read plus the plan's own effects, known to hold since then only if nobody else wrote).
- Concurrent runs (a plan and an apply, two CI jobs) merge instead of overwriting: the writer takes an
  OS lock on ``FILE.lock``, reads the file as it is now, keeps per (group, user) the record with the
  later ``verified_at`` (a tombstone is a record too, kept for a week, so a user found gone is not
  brought back by a slower run that read it earlier), and replaces the file atomically (temporary
  file, then rename). A crash leaves the old file or the new one, never half of one. Without OS locks (no ``fcntl``) the
  merge still runs, unlocked: a lost update only costs re-reads, since the state can only ever make a
  run read more, never write differently (``incremental.py`` re-reads every user a plan touches).
- Like the token cache, the state only ever saves calls: a damaged file is set aside (``*.corrupt``)
  with a warning and the run reads in full; a state of another library is refused (``--state`` names
  the wrong file), rather than mixed with this one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from facesync import __version__
from facesync.cache import cache_dir
from facesync.errors import ConfigError
from facesync.files import atomic_output
from facesync.model import Desired, DesiredUser

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
TOMBSTONE_KEEP_S = 7 * 86400  # a record of a user found gone outlives any run that read it before
Subject = tuple[str, str]  # (group_id, user_id)


@dataclass(frozen=True, slots=True)
class Known:
    """What facesync last knew of one user in one group. ``face_tokens``/``user_info`` None: not read.
    ``gone``: a listing found the user missing at ``verified_at``."""

    face_tokens: tuple[str, ...] | None
    user_info: str | None
    verified_at: float
    entry: str = ""
    gone: bool = False


@dataclass(frozen=True)
class State:
    """Every (group, user) facesync knows of in the library named ``target``."""

    target: str
    users: Mapping[Subject, Known] = field(default_factory=dict)

    def known(self, subject: Subject) -> Known | None:
        """The live record of ``subject`` (None when unknown or found gone)."""
        record = self.users.get(subject)
        return None if record is None or record.gone else record


def default_path(identity: str, directory: str | os.PathLike | None = None) -> Path:
    """The state file of the library named ``identity``, in the cache folder (hashed like the token cache)."""
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    return Path(directory if directory is not None else cache_dir()) / f"state-{digest}.json"


def entry_digest(user: DesiredUser) -> str:
    """What the manifest says of one user, as written: its images (kind and source), user_info and
    controls. A photo edited in place keeps the digest; its new face_token differs from the state's
    faces, so the plan touches the user and reads it anyway."""
    faces = sorted(f"{image.kind.value}:{image.source}" for image in user.images)
    text = json.dumps([faces, user.user_info, user.quality_control, user.liveness_control], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def entry_digests(desired: Desired) -> dict[Subject, str]:
    """``entry_digest`` of every (group, user) the manifest names."""
    return {(group.group_id, user.user_id): entry_digest(user) for group in desired.groups for user in group.users}


# -- reading ------------------------------------------------------------------------------------------


def load_state(path: str | os.PathLike, identity: str) -> State | None:
    """The state in ``path`` of the library ``identity``; None when there is none (or it is damaged:
    set aside with a warning). A state of another library is a ``ConfigError``."""
    document = _read(Path(path))
    if document is None:
        return None
    if document["target"] != identity:
        raise ConfigError(f"the state {path} is of the library {document['target']}, not of {identity}",
                          hint="give each library its own --state FILE (or leave --state out: the default "
                               "is one file per library in the cache folder)")
    return State(identity, _users(document))


def _read(path: Path) -> dict | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        log.warning("cannot read the state %s (%s): reading the library in full", path,
                    getattr(error, "strerror", None) or error)
        return None
    try:
        document = json.loads(text)
        _check(document)
    except (ValueError, TypeError, KeyError) as error:
        _set_aside(path, error)
        return None
    return document


def _check(document: object) -> None:
    """ValueError (the file is not what facesync wrote) unless ``document`` is a state of this format."""
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"not a facesync state of format {FORMAT_VERSION}")
    if not isinstance(document.get("target"), str) or not isinstance(document.get("users"), list):
        raise ValueError("no target or users")  # noqa: TRY004 (a bad file, told apart from a bug)
    for row in document["users"]:
        tokens = row["face_tokens"]
        if not (isinstance(row["group_id"], str) and isinstance(row["user_id"], str)
                and (tokens is None or (isinstance(tokens, list) and all(isinstance(t, str) for t in tokens)))
                and (row["user_info"] is None or isinstance(row["user_info"], str))
                and isinstance(row["verified_at"], (int, float)) and isinstance(row.get("entry", ""), str)):
            raise ValueError(f"bad record {row!r:.80}")


def _set_aside(path: Path, error: Exception) -> None:
    aside = path.with_name(path.name + ".corrupt")
    try:
        os.replace(path, aside)
        where = f"; moved to {aside}"
    except OSError:
        where = ""
    log.warning("the state %s is damaged (%s)%s: reading the library in full", path, error, where)


def _users(document: dict) -> dict[Subject, Known]:
    users: dict[Subject, Known] = {}
    for row in document["users"]:
        tokens = row["face_tokens"]
        users[(row["group_id"], row["user_id"])] = Known(
            None if tokens is None else tuple(tokens), row["user_info"], float(row["verified_at"]),
            row.get("entry", ""), bool(row.get("gone", False)))
    return users


# -- writing ------------------------------------------------------------------------------------------


def record(path: str | os.PathLike, identity: str, observed: Mapping[Subject, Known | None], *,
           now: float | None = None) -> None:
    """Merge what a run observed into the state at ``path`` (see the module's docstring).

    ``observed`` maps a subject to its new record, or to None to forget it (a write whose result is
    uncertain: the next incremental run reads it again). A forget applies whatever the file's time.
    Tombstones older than ``TOMBSTONE_KEEP_S`` are dropped. Writing never stops a run: a folder that
    cannot be written is a warning.
    """
    now = time.time() if now is None else now
    if not observed:
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path):
            document = _read(path)
            if document is not None and document["target"] != identity:
                log.warning("the state %s is of the library %s, not of %s: left as it is", path,
                            document["target"], identity)
                return
            users = _users(document) if document is not None else {}
            for subject, new in observed.items():
                old = users.get(subject)
                if new is None:
                    users.pop(subject, None)
                elif old is None or new.verified_at >= old.verified_at:
                    users[subject] = new
            users = {subject: known for subject, known in users.items()
                     if not (known.gone and now - known.verified_at > TOMBSTONE_KEEP_S)}
            with atomic_output(path, what="state") as handle:
                json.dump(_document(identity, users), handle, ensure_ascii=False, separators=(",", ":"))
                handle.write("\n")
    except (OSError, ConfigError) as error:
        log.warning("cannot write the state %s (%s): the next incremental run reads more", path,
                    getattr(error, "strerror", None) or error)


def _document(identity: str, users: Mapping[Subject, Known]) -> dict:
    rows = []
    for (group_id, user_id), known in sorted(users.items()):
        row = {"group_id": group_id, "user_id": user_id,
               "face_tokens": None if known.face_tokens is None else list(known.face_tokens),
               "user_info": known.user_info, "verified_at": known.verified_at, "entry": known.entry}
        if known.gone:
            row["gone"] = True
        rows.append(row)
    return {"format_version": FORMAT_VERSION, "facesync_version": __version__, "target": identity, "users": rows}


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold ``PATH.lock`` exclusively (released by the OS if the process dies); no-op without fcntl."""
    try:
        import fcntl
    except ImportError:  # not POSIX: merge unlocked (see the module's docstring)
        yield
        return
    fd = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
