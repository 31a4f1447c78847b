"""The token cache: what resolve learned about images, so that the next plan needs no call and no read.

Three kinds of fact are kept:

- content sha256 → face_token (and URL → face_token), answered by ``detect`` or recorded by apply
  from user/add: per target, since face_tokens of one library mean nothing to another. What ``detect``
  answered is also kept on its own, so that a plan can tell a token the service stored (learned from a
  user/add answer) from one it only detected;
- per target, whether the service's ``detect`` gives an image the token user/add stores for it (the
  contract leaves it open): learned when an upload's answer meets a detected token of the same image, from
  ``facesync doctor``, or from apply's one-upload probe (see ``facesync/apply/probe.py``);
- (absolute path, size, mtime_ns) → sha256, so an unchanged file is not read again: a fact about the
  local file alone, kept once for every target, so that the manifest loader (which runs before the
  target is known) can skip re-checking the content of a file already hashed.

Where: ``$FACESYNC_CACHE_DIR``, else ``$XDG_CACHE_HOME/facesync``, else ``~/.cache/facesync``; one
SQLite file a target, ``tokens-<sha256(identity)[:16]>.sqlite3``, and ``files.sqlite3`` beside them.
SQLite in WAL mode with a busy timeout
lets two runs (a plan and an apply, two CI jobs) share the file. The cache only ever saves work: a
corrupt file is moved aside and rebuilt, and a cache that cannot be written at all degrades to memory
with a warning; neither stops a run.

URL images are cached by their URL: a URL is taken to name fixed content (as content-addressed CDNs do).
Change the URL, or delete the cache file, when the picture behind a URL changes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from facesync.clock import utc_now
from facesync.model import ImageKind

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
_TOKEN_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS tokens (sha256 TEXT PRIMARY KEY, face_token TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS urls (url TEXT PRIMARY KEY, face_token TEXT NOT NULL)",
    # what detect answered, by sha256 or URL: a token here and in ``tokens`` alike was never stored-checked
    "CREATE TABLE IF NOT EXISTS detected (image TEXT PRIMARY KEY, face_token TEXT NOT NULL)",
    ("CREATE TABLE IF NOT EXISTS pending (image TEXT NOT NULL, group_id TEXT NOT NULL, user_id TEXT NOT NULL,"
     " PRIMARY KEY (image, group_id, user_id))"),
    ("CREATE TABLE IF NOT EXISTS facts (name TEXT PRIMARY KEY, value TEXT NOT NULL, seen_at TEXT NOT NULL,"
     " seen_by TEXT NOT NULL)"),
)
_DETECT_AGREES = "detect_token_is_stored_token"
_FILE_SCHEMA = (
    ("CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL,"
     " mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL)"),
)
IN_MEMORY = ":memory:"
_CHUNK = 500  # ids in one "IN (...)" query: below SQLite's smallest variable limit
FILES_NAME = "files.sqlite3"


class DetectAgreement(str, Enum):
    """Whether ``detect`` gives an image the face_token user/add stores for it, on one service."""

    EQUAL = "equal"
    DIFFERENT = "different"

    @classmethod
    def of(cls, equal: bool) -> DetectAgreement:
        return cls.EQUAL if equal else cls.DIFFERENT


def image_key(kind: ImageKind, sha256: str | None, source: str) -> str | None:
    """How the cache names an image: a file by its content sha256, a URL by itself (None: a face_token
    image, or a file not hashed yet)."""
    if kind is ImageKind.URL:
        return source
    return sha256 if kind is ImageKind.FILE else None


def cache_dir() -> Path:
    """The documented place of the cache, by order of precedence."""
    explicit = os.environ.get("FACESYNC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "facesync"
    return Path.home() / ".cache" / "facesync"


def cache_path(identity: str, directory: str | os.PathLike | None = None) -> Path:
    """The cache file of the library named ``identity`` (hashed: identities may hold URLs and paths)."""
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    return Path(directory if directory is not None else cache_dir()) / f"tokens-{digest}.sqlite3"


class FileHashes:
    """(absolute path, size, mtime_ns) → sha256 of local files, shared by every target."""

    def __init__(self, path: str | os.PathLike):
        self._store = _Store(path, _FILE_SCHEMA)

    @classmethod
    def default(cls, directory: str | os.PathLike | None = None) -> FileHashes:
        return cls(Path(directory if directory is not None else cache_dir()) / FILES_NAME)

    def sha256(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The sha256 recorded for ``path`` if the file still has that size and mtime."""
        return self._store.one("SELECT sha256 FROM files WHERE path = ? AND size = ? AND mtime_ns = ?",
                               (os.path.abspath(path), size, mtime_ns))

    def known(self, path: str, size: int, mtime_ns: int) -> bool:
        """Whether this very file (same size and mtime) was read and hashed before."""
        return self.sha256(path, size, mtime_ns) is not None

    def record(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        self._store.write("INSERT OR REPLACE INTO files (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
                          (os.path.abspath(path), size, mtime_ns, sha256))

    def paths_of(self, sha256s: Iterable[str]) -> dict[str, str]:
        """sha256 -> one file last seen with that content (the first by name)."""
        wanted = sorted(set(sha256s))
        found: dict[str, str] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            for sha256, path in self._store.rows(
                    f"SELECT sha256, min(path) FROM files WHERE sha256 IN ({','.join('?' * len(chunk))}) "
                    "GROUP BY sha256", tuple(chunk)):
                found[sha256] = path
        return found

    def close(self) -> None:
        self._store.close()


class TokenCache:
    """A thread-safe view of one target's cache file (and the shared file hashes beside it).
    Every method answers or does nothing; none raises."""

    def __init__(self, path: str | os.PathLike, files: FileHashes | None = None):
        self._store = _Store(path, _TOKEN_SCHEMA)
        self._agreement: DetectAgreement | None = None
        if files is None:
            beside = IN_MEMORY if str(path) == IN_MEMORY else Path(path).parent / FILES_NAME
            files = FileHashes(beside)
        self.files = files

    @property
    def path(self) -> str:
        return self._store.path

    @classmethod
    def for_target(cls, identity: str, directory: str | os.PathLike | None = None) -> TokenCache:
        return cls(cache_path(identity, directory))

    @classmethod
    def in_memory(cls) -> TokenCache:
        return cls(IN_MEMORY)

    # -- content → face_token -------------------------------------------------------------------------

    def token(self, sha256: str) -> str | None:
        return self._store.one("SELECT face_token FROM tokens WHERE sha256 = ?", (sha256,))

    def record(self, sha256: str, face_token: str) -> None:
        """Remember that the image with this content hash is ``face_token`` in this library."""
        self._store.write("INSERT OR REPLACE INTO tokens (sha256, face_token) VALUES (?, ?)", (sha256, face_token))

    def url_token(self, url: str) -> str | None:
        return self._store.one("SELECT face_token FROM urls WHERE url = ?", (url,))

    def record_url(self, url: str, face_token: str) -> None:
        self._store.write("INSERT OR REPLACE INTO urls (url, face_token) VALUES (?, ?)", (url, face_token))

    def record_image(self, image: str, face_token: str) -> None:
        """The token of an image named by its content sha256 or by its URL."""
        if "://" in image:
            self.record_url(image, face_token)
        else:
            self.record(image, face_token)

    def record_detected(self, image: str, face_token: str) -> None:
        """What ``detect`` answered for an image (its sha256, or its URL); it is also the image's token
        until an upload's answer replaces it."""
        self.record_image(image, face_token)
        self._store.write("INSERT OR REPLACE INTO detected (image, face_token) VALUES (?, ?)", (image, face_token))

    def only_detected(self, image: str, face_token: str) -> bool:
        """Whether ``face_token`` is, for this image (sha256 or URL), a token ``detect`` answered and no upload
        has confirmed: on a service whose detect and user/add disagree it matches none of the library's."""
        if self.detect_agreement() is DetectAgreement.EQUAL:
            return False
        return self._store.one("SELECT face_token FROM detected WHERE image = ?", (image,)) == face_token

    def stored_tokens(self, face_tokens: Iterable[str]) -> set[str]:
        """Those of ``face_tokens`` that an upload's answer gave for an image this cache knows (not only what
        ``detect`` answered): faces that are certainly that image, whatever detect answers."""
        wanted = sorted(set(face_tokens))
        found: set[str] = set()
        for start in range(0, len(wanted), _CHUNK):
            chunk = tuple(wanted[start:start + _CHUNK])
            marks = ",".join("?" * len(chunk))
            for table, key in (("tokens", "sha256"), ("urls", "url")):
                found.update(token for (token,) in self._store.rows(
                    f"SELECT t.face_token FROM {table} t LEFT JOIN detected d ON d.image = t.{key} "
                    f"WHERE t.face_token IN ({marks}) AND (d.face_token IS NULL OR d.face_token != t.face_token)",
                    chunk))
        return found

    # -- what the service does ------------------------------------------------------------------------

    def detect_agreement(self) -> DetectAgreement | None:
        """Whether this service's ``detect`` answers the token user/add stores; None: not seen yet. Read
        once (resolve asks for every image), then kept as this process records it."""
        if self._agreement is None:
            value = self._store.one("SELECT value FROM facts WHERE name = ?", (_DETECT_AGREES,))
            try:
                self._agreement = DetectAgreement(value) if value is not None else None
            except ValueError:  # written by a later facesync: as good as unknown
                self._agreement = None
        return self._agreement

    def detect_agreement_seen(self) -> str:
        """How and when the agreement was seen, for messages ("by facesync doctor at 2026-...")."""
        rows = self._store.rows("SELECT seen_by, seen_at FROM facts WHERE name = ?", (_DETECT_AGREES,))
        return f"by {rows[0][0]} at {rows[0][1]}" if rows else "never"

    def record_detect_agreement(self, agreement: DetectAgreement, seen_by: str) -> None:
        self._agreement = agreement
        self._store.write("INSERT OR REPLACE INTO facts (name, value, seen_at, seen_by) VALUES (?, ?, ?, ?)",
                          (_DETECT_AGREES, agreement.value, utc_now(), seen_by))

    # -- file → content hash --------------------------------------------------------------------------

    def file_sha256(self, path: str, size: int, mtime_ns: int) -> str | None:
        return self.files.sha256(path, size, mtime_ns)

    def record_file(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        self.files.record(path, size, mtime_ns, sha256)

    def files_of_tokens(self, face_tokens: Iterable[str]) -> dict[str, str]:
        """face_token -> a local file known to have that content (any one), for the tokens this cache can
        name: lets a plan show a removed face as the photo it was uploaded from."""
        wanted = sorted(set(face_tokens))
        by_sha: dict[str, str] = {}
        for start in range(0, len(wanted), _CHUNK):
            chunk = wanted[start:start + _CHUNK]
            by_sha.update(self._store.rows(
                f"SELECT sha256, face_token FROM tokens WHERE face_token IN ({','.join('?' * len(chunk))})",
                tuple(chunk)))
        files = self.files.paths_of(by_sha)
        return {token: files[sha] for sha, token in by_sha.items() if sha in files}

    def record_upload(self, image: str, face_token: str, path: str | None = None) -> None:
        """After an upload of an image (its content sha256, read from the file at ``path``, or its URL) was
        answered with ``face_token``, the token the library stores: the next plan neither reads nor detects
        it. A file is stat'ed now, so call this right after the upload read it."""
        if self.detect_agreement() is None:  # an upload of a detected image answers the question for free
            detected = self._store.one("SELECT face_token FROM detected WHERE image = ?", (image,))
            if detected is not None:
                self.record_detect_agreement(DetectAgreement.of(detected == face_token), "an upload's answer")
        self.record_image(image, face_token)
        if path is None:
            return
        try:
            info = os.stat(path)
        except OSError:
            return
        self.record_file(path, info.st_size, info.st_mtime_ns, image)

    # -- uploads whose answer was not recorded yet ----------------------------------------------------

    def record_pending(self, image: str, group_id: str, user_id: str) -> None:
        """Just before an upload of ``image`` (sha256 or URL) to a user: until ``record_upload`` and
        ``clear_pending`` follow, a crash leaves a face whose token only the library knows (resolve.py)."""
        self._store.write("INSERT OR REPLACE INTO pending (image, group_id, user_id) VALUES (?, ?, ?)",
                          (image, group_id, user_id))

    def clear_pending(self, image: str, group_id: str, user_id: str) -> None:
        self._store.write("DELETE FROM pending WHERE image = ? AND group_id = ? AND user_id = ?",
                          (image, group_id, user_id))

    def pending(self) -> list[tuple[str, str, str]]:
        """(image, group_id, user_id) of every upload whose answer was never recorded."""
        return [tuple(row) for row in self._store.rows("SELECT image, group_id, user_id FROM pending", ())]

    def close(self) -> None:
        self._store.close()
        self.files.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TokenCache({self.path!r})"


class _Store:
    """One SQLite file of the cache: WAL, a busy timeout, and recovery from corruption."""

    def __init__(self, path: str | os.PathLike, schema: tuple[str, ...]):
        self.path = str(path)
        self._schema = schema
        self._lock = threading.Lock()
        self._db = self._open()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- storage --------------------------------------------------------------------------------------

    def one(self, sql: str, params: tuple) -> str | None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    row = self._db.execute(sql, params).fetchone()
                    return row[0] if row else None
                except sqlite3.DatabaseError as error:
                    if attempt == 2 or not self._recover(error):
                        return None
        return None

    def rows(self, sql: str, params: tuple) -> list[tuple]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    return self._db.execute(sql, params).fetchall()
                except sqlite3.DatabaseError as error:
                    if attempt == 2 or not self._recover(error):
                        return []
        return []

    def write(self, sql: str, params: tuple) -> None:
        with self._lock:
            for attempt in (1, 2):
                try:
                    self._db.execute(sql, params)
                    return
                except sqlite3.DatabaseError as error:
                    if attempt == 2 or not self._recover(error):
                        return

    def _recover(self, error: sqlite3.DatabaseError) -> bool:
        """After a failed statement: rebuild a corrupt file, then say whether retrying makes sense."""
        if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
            log.warning("token cache %s is busy; going on without it for this lookup", self.path)
            return False
        log.warning("token cache %s is unreadable (%s); rebuilding it", self.path, error)
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._discard()
        self._db = self._open()
        return True

    def _open(self) -> sqlite3.Connection:
        if self.path != IN_MEMORY:
            try:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                return self._connect(self.path)
            except sqlite3.DatabaseError as error:
                if not _is_corruption(error):
                    return self._fallback(error)
                log.warning("token cache %s is corrupt (%s); rebuilding it", self.path, error)
                self._discard()
                try:
                    return self._connect(self.path)
                except (sqlite3.Error, OSError) as again:
                    return self._fallback(again)
            except OSError as error:
                return self._fallback(error)
        return self._connect(IN_MEMORY)

    def _fallback(self, error: Exception) -> sqlite3.Connection:
        log.warning("token cache %s cannot be used (%s); keeping tokens in memory for this run "
                    "(set FACESYNC_CACHE_DIR to a writable folder)", self.path, error)
        self.path = IN_MEMORY
        return self._connect(IN_MEMORY)

    def _connect(self, path: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        try:
            db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            if path != IN_MEMORY:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            for statement in self._schema:
                db.execute(statement)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()  # touch the file: corruption shows here
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _discard(self) -> None:
        """Move a corrupt file aside (kept once, for a curious user) so a fresh one can be made."""
        if self.path == IN_MEMORY:
            return
        for suffix in ("-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except OSError:
                pass
        try:
            os.replace(self.path, self.path + ".corrupt")
        except OSError:
            pass


def _is_corruption(error: sqlite3.DatabaseError) -> bool:
    text = str(error).lower()
    return not isinstance(error, sqlite3.OperationalError) or any(
        word in text for word in ("not a database", "malformed", "corrupt", "no such table", "no such column")
    )
