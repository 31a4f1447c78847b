"""The embedded face library: the Baidu Face V3 faceset contract on a SQLite file.

Same semantics and error codes as the contract (shared/baidu-faceset-v3.md), no network, no credentials.
Several threads (each call borrows a connection from a small pool) and several processes may share one
file: every mutating call is one ``BEGIN IMMEDIATE`` transaction, readers see a consistent snapshot (WAL),
a writer waits up to 30 s for the lock and then answers 222901 (retryable).

Checks run in this order: required parameters (222001, in the endpoint's documented
order), then parameter formats, then the image (decoded, or downloaded, before any lock is taken), then
the quality/liveness hook, then the library's state (223xxx) inside the transaction. Error messages are
Baidu's own (``errors.message_for``); only the two cases Baidu has no answer for (the face cap, a group
still being deleted) add a short explanation in parentheses.

Where the contract is silent, this library chooses (the behaviours of the contract's UNKNOWN table are
switches of ``unknowns.Unknowns``, lenient by default; the codes Baidu publishes none for are in
``api/errors.py``):
- ``None`` and ``""`` are a missing required parameter (222001). For the optional ``user_info``, ``None``
  means "not given" (kept, or cleared under harsh unknowns) and ``""`` sets it to empty;
  ``quality_control``/``liveness_control``/``action_type`` of ``None`` or ``""`` mean the default.
- user_id format errors are 222018 on every endpoint (222007 "uid" belongs to older endpoints); user/add
  takes 128 bytes, every other endpoint 48 (the seed's limits), unless ``user_id_limits_per_endpoint``
  is off.
- BASE64 text over 2 MB is 222013 (the parameter is too long whatever it holds); text that is not base64
  and bytes that are not PNG/JPEG/BMP are 222203. A FACE_TOKEN image or ``face_token`` parameter that is
  not 32 lowercase hex characters is 222025; a well-formed but unknown one is 222209. Lenient: tokens
  stay usable after their faces are deleted; harsh: only while a face of a live group holds them.
- user/get on a named group that does not exist answers 223103 (the contract lists only 223103 for it);
  user/get and user/delete with ``@ALL`` answer 223103 when the user is in no group.
- The face cap (20 by default) refuses the add with ``FACE_CAP_CODE`` (222208 "the number of image is
  incorrect"), a permanent input error: retrying cannot help. REPLACE adds and updates leave one face.
- ``length`` must be 1..1000 (harsh: larger is served as 1000) and ``start`` ≥ 0 (integers or digit
  strings), else 222003 / 222002.
- user/copy keeps each face's original ctime; the copy shares nothing with its source afterwards.
- user/update (and a REPLACE add) replaces every face with the one image (ctime now), even when that
  image was already on the user.
- Background group deletion (on by default; groups of more than 500 faces) is lazy: the group
  disappears at once from every read (getlist, getusers, user/get, face/getlist: 223100 or 223103 as for
  a deleted group), copies into it answer 223111, a second group/delete answers 223100, adds to that id
  answer ``GROUP_BEING_DELETED_ADD_CODE`` (223100, even where harsh unknowns would create a missing
  group), and group/add of the id answers 222901 "system busy" (retryable; harsh: 223101 "already
  exists") until ``faces / group_delete_rate`` seconds have passed; then the rows are purged and the id
  is free again.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from facesync.api.errors import (
    ACTION_TYPE_CODE,
    FACE_CAP_CODE,
    FACE_ON_OTHER_USER_CODE,
    GROUP_BEING_DELETED_ADD_CODE,
    GROUP_BEING_DELETED_RECREATE_CODE,
    GROUP_BEING_DELETED_RECREATE_HARSH_CODE,
    FaceApiError,
    error_for,
    message_for,
)
from facesync.api.protocol import (
    ALL_GROUPS,
    CONTROL_LEVELS,
    FACE_TOKEN_PATTERN,
    GROUP_ID_MAX_BYTES,
    ID_PATTERN,
    MAX_FACES_PER_USER,
    NO_CONTROL,
    PAGE_DEFAULT,
    PAGE_MAX,
    USER_ID_MAX_BYTES,
    USER_ID_MAX_BYTES_ON_ADD,
    USER_INFO_MAX_BYTES,
    Ack,
    AddedFace,
    CallRecord,
    DetectedFace,
    Detection,
    Endpoint,
    FaceEntry,
    FaceList,
    IdPage,
    Image,
    ImageType,
    LibraryBase,
    Location,
    UserMembership,
    UserRecord,
)
from facesync.errors import FacesyncError
from facesync.images import detect_face_token, local_face_token
from facesync.local import schema
from facesync.local.images import ImageProblem, decode_base64_image, fetch_url_image
from facesync.local.unknowns import LENIENT, Unknowns

BACKGROUND_DELETE_THRESHOLD = 500  # faces; larger groups are deleted in the background
BACKGROUND_DELETE_RATE = 20.0  # faces per second
IMAGE_TYPES = tuple(kind.value for kind in ImageType)
ADD_ACTIONS = ("APPEND", "REPLACE")  # user/add's action_type; APPEND is the default
UPDATE_ACTIONS = ("UPDATE", "REPLACE")  # user/update's action_type; UPDATE is the default
MAX_IDLE_CONNECTIONS = 16

_DIGITS = re.compile(r"[0-9]+\Z")

# A FACE_TOKEN image is usable once the library has seen the token (lenient), or only while a face of a
# live group holds it (harsh: Baidu's private deployment says a token needs a stored feature).
_USABLE_TOKEN_SQL = {
    False: "SELECT 1 FROM known_tokens WHERE face_token = ?",
    True: "SELECT 1 FROM faces f JOIN users u ON u.seq = f.user_seq JOIN groups g ON g.seq = u.group_seq "
          "WHERE f.face_token = ? AND g.deleting_until IS NULL LIMIT 1",
}

log = logging.getLogger(__name__)

ImageCheck = Callable[[str, str, str], "int | None"]
FaceCheck = Callable[[bytes], "int | None"]  # image bytes → the code to refuse them with (serve --detect-faces)


class LocalStoreError(FacesyncError):
    """The library file cannot be used: not a facesync library, a newer schema, unreadable, closed."""


@dataclass(frozen=True, slots=True)
class LibraryCounts:
    """What the library holds, for the emulator's admin view and for tests."""

    groups: int
    users: int
    faces: int
    known_tokens: int


def new_log_id() -> int:
    """A log_id as Baidu's look: never 0, never small, and within signed 64 bits (some parsers' limit)."""
    return int.from_bytes(os.urandom(8), "big") >> 1 | 1 << 32


def _fail(code: int, detail: str = "", **params: str) -> FaceApiError:
    """The error Baidu answers, with its exact message; ``detail`` only where Baidu has no such case."""
    message = message_for(code, **params)
    return error_for(code, f"{message} ({detail})" if detail else message, new_log_id())


def location_for(face_token: str) -> Location:
    """A plausible face box derived from the token, so that the same image always gets the same one."""
    b = bytes.fromhex(face_token)
    width = 80 + b[4] % 120
    return Location(left=round(20 + b[0] % 200 + b[1] / 256, 2), top=round(20 + b[2] % 200 + b[3] / 256, 2),
                    width=float(width), height=float(width + b[5] % 24), rotation=b[6] % 41 - 20)


def _endpoint(name: str):
    """Report each call of the decorated method to the library's observers, as a remote library reports
    each request: the endpoint, the answer's code and log_id, how long it took."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            if not self.observers:
                return method(self, *args, **kwargs)
            started = time.monotonic()
            try:
                result = method(self, *args, **kwargs)
            except FaceApiError as error:
                self._notify(CallRecord(name, error.error_code, error.log_id, time.monotonic() - started, 1))
                raise
            except Exception:
                self._notify(CallRecord(name, None, None, time.monotonic() - started, 1))
                raise
            self._notify(CallRecord(name, 0, result.log_id, time.monotonic() - started, 1))
            return result

        return wrapper

    return decorate


def _translate_db_errors(method):
    """SQLite trouble becomes an error of the API's kinds: a busy file is retryable, the rest is fatal."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as error:
            if "locked" in str(error) or "busy" in str(error):
                raise _fail(222901, "the library file is busy") from error
            raise LocalStoreError(f"local library {self.path}: {error}") from error
        except sqlite3.DatabaseError as error:
            raise LocalStoreError(f"local library {self.path}: {error}") from error

    return wrapper


# ---- parameter checks (pure) ----

def _missing(value: object) -> bool:
    return value is None or value == ""


def _require(*pairs: tuple[str, object]) -> None:
    for name, value in pairs:
        if _missing(value):
            raise _fail(222001, param=name)


def _check_id(value: str, max_bytes: int, code: int, *, allow_all: bool = False) -> None:
    if allow_all and value == ALL_GROUPS:
        return
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or len(value) > max_bytes:
        raise _fail(code)


def _check_group_id(value: str, *, allow_all: bool = False) -> None:
    _check_id(value, GROUP_ID_MAX_BYTES, 222006, allow_all=allow_all)


def _check_user_id(value: str, max_bytes: int) -> None:
    _check_id(value, max_bytes, 222018)


def _action(value: str | None, choices: tuple[str, ...]) -> str:
    """The action_type asked for (the first choice when none is given); anything else is refused."""
    if _missing(value):
        return choices[0]
    if value not in choices:
        raise error_for(ACTION_TYPE_CODE, f"param[action_type] format error (must be {' or '.join(choices)})",
                        new_log_id())
    return value


def _check_user_info(value: str | None) -> None:
    if value is not None and (not isinstance(value, str) or len(value.encode("utf-8")) > USER_INFO_MAX_BYTES):
        raise _fail(222010)


def _control(value: str | None, code: int) -> str:
    level = NO_CONTROL if _missing(value) else value
    if level not in CONTROL_LEVELS:
        raise _fail(code)
    return level


def _check_face_token(value: str) -> None:
    if not isinstance(value, str) or not FACE_TOKEN_PATTERN.fullmatch(value):
        raise _fail(222025)


def _type_text(image: Image | None) -> str | None:
    """The image_type as sent: an ``ImageType``'s value, or the string a caller passed as it is."""
    return None if image is None else getattr(image.type, "value", image.type)


def _image_type(image: Image) -> str:
    kind = _type_text(image)
    if kind not in IMAGE_TYPES:
        raise _fail(222015)
    return kind


def _page_number(value: object, default: int, code: int, minimum: int, maximum: int | None) -> int:
    if _missing(value):
        return default
    if isinstance(value, bool):
        raise _fail(code)
    if isinstance(value, str) and _DIGITS.match(value):
        value = int(value)
    if not isinstance(value, int) or value < minimum or (maximum is not None and value > maximum):
        raise _fail(code)
    return value


def _page(start: object, length: object, *, clamp: bool) -> tuple[int, int]:
    """(first, count) of a listing; ``clamp`` serves PAGE_MAX for a longer ``length`` instead of 222003."""
    first = _page_number(start, 0, 222002, 0, None)
    count = _page_number(length, PAGE_DEFAULT, 222003, 1, None if clamp else PAGE_MAX)
    return first, min(count, PAGE_MAX)


class LocalLibrary(LibraryBase):
    """A Baidu-compatible face library in one SQLite file; implements ``FaceLibrary``."""

    def __init__(self, path: str, *, unknowns: str | Unknowns = LENIENT,
                 max_faces_per_user: int | None = MAX_FACES_PER_USER, background_group_delete: bool = True,
                 group_delete_rate: float = BACKGROUND_DELETE_RATE, user_id_limits_per_endpoint: bool = True,
                 image_check: ImageCheck | None = None, face_check: FaceCheck | None = None,
                 url_timeout: float = 10.0,
                 url_max_bytes: int = 10 * 1024 * 1024, clock: Callable[[], float] = time.time):
        """The documented limits are on by default; each keyword turns one off for a test that needs it:
        ``max_faces_per_user=None`` (no face cap), ``background_group_delete=False`` (every group goes at
        once), ``user_id_limits_per_endpoint=False`` (128 bytes everywhere, not 48 off user/add)."""
        super().__init__()
        self.unknowns = unknowns if isinstance(unknowns, Unknowns) else Unknowns.named(unknowns)
        if max_faces_per_user is not None and max_faces_per_user < 1:
            raise ValueError("max_faces_per_user must be at least 1")
        if group_delete_rate <= 0:
            raise ValueError("group_delete_rate must be positive")
        self.path = os.path.abspath(path)
        self.max_faces_per_user = max_faces_per_user
        self.background_group_delete = background_group_delete
        self.group_delete_rate = group_delete_rate
        self._user_id_max_bytes = USER_ID_MAX_BYTES if user_id_limits_per_endpoint else USER_ID_MAX_BYTES_ON_ADD
        self._image_check = image_check
        self._face_check = face_check
        self._url_timeout = url_timeout
        self._url_max_bytes = url_max_bytes
        self._clock = clock
        self._idle: list[sqlite3.Connection] = []
        self._pool_lock = threading.Lock()
        self._pool_pid = os.getpid()
        self._closed = False
        parent = os.path.dirname(self.path)
        try:
            os.makedirs(parent, exist_ok=True)
            with self._connection() as conn:
                schema.ensure_schema(conn, self.path)
            self._purge_finished_deletions()
        except (schema.SchemaError, OSError, sqlite3.DatabaseError) as error:
            self.close()
            raise LocalStoreError(f"cannot open local library {self.path}: {error}",
                                  hint="point --target local:PATH at a facesync library file or a new path") from error

    # ---- lifecycle ----

    @property
    def identity(self) -> str:
        return f"local:{self.path}"

    def __repr__(self) -> str:
        return f"LocalLibrary({self.path!r})"

    def close(self) -> None:
        """Close the idle connections of this process; the library cannot be used afterwards."""
        self._closed = True
        with self._pool_lock:
            idle = self._idle if self._pool_pid == os.getpid() else []
            self._idle = []
        for conn in idle:
            try:
                conn.close()
            except sqlite3.Error:
                pass

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        """A connection for one call, borrowed from a small pool.

        A pool rather than one connection per thread: servers start a thread per request, and a
        connection per thread would stay open after its thread is gone. A forked child never touches
        its parent's connections.
        """
        if self._closed:
            raise LocalStoreError(f"local library {self.path} is closed")
        with self._pool_lock:
            if self._pool_pid != os.getpid():
                self._idle, self._pool_pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = schema.connect(self.path)
        try:
            yield conn
        finally:
            with self._pool_lock:
                keep = not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS and not conn.in_transaction
                if keep:
                    self._idle.append(conn)
            if not keep:
                conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._connection() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    # ---- lookups inside a transaction ----

    @staticmethod
    def _group_seq(conn: sqlite3.Connection, group_id: str) -> int | None:
        """The live group's row; a group being deleted in the background counts as absent."""
        row = conn.execute("SELECT seq FROM groups WHERE group_id = ? AND deleting_until IS NULL",
                           (group_id,)).fetchone()
        return row[0] if row else None

    @staticmethod
    def _user_seq(conn: sqlite3.Connection, group_seq: int, user_id: str) -> int | None:
        row = conn.execute("SELECT seq FROM users WHERE group_seq = ? AND user_id = ?",
                           (group_seq, user_id)).fetchone()
        return row[0] if row else None

    @classmethod
    def _existing_group(cls, conn: sqlite3.Connection, group_id: str, missing: int = 223100) -> int:
        """The group's row, or the error ``missing`` (223100, or 223111 for a copy's destination)."""
        group_seq = cls._group_seq(conn, group_id)
        if group_seq is None:
            raise _fail(missing)
        return group_seq

    @classmethod
    def _existing_user(cls, conn: sqlite3.Connection, group_seq: int, user_id: str) -> int:
        user_seq = cls._user_seq(conn, group_seq, user_id)
        if user_seq is None:
            raise _fail(223103)
        return user_seq

    def _now_text(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self._clock()))

    # ---- images ----

    def _resolve_image(self, image: Image | None, *, detecting: bool = False) -> str:
        """The face_token of an image parameter, or the error Baidu would answer.

        ``detecting``: the token detect answers, which the harsh variant makes differ from the stored one.
        """
        _require(("image", None if image is None else image.value),
                 ("image_type", _type_text(image)))
        kind = _image_type(image)
        if kind == ImageType.FACE_TOKEN:
            _check_face_token(image.value)
            with self._read() as conn:
                usable = conn.execute(_USABLE_TOKEN_SQL[self.unknowns.face_token_needs_live_face],
                                      (image.value,)).fetchone()
            if not usable:
                raise _fail(222209)
            return image.value
        data = self._image_bytes(image, kind)
        refusal = self._face_check(data) if self._face_check is not None else None
        if refusal:
            raise _fail(refusal)
        if detecting and self.unknowns.detect_token_differs:
            return detect_face_token(data)
        return local_face_token(data)

    def _image_bytes(self, image: Image, kind: str) -> bytes:
        try:
            if kind == ImageType.BASE64:
                return decode_base64_image(image.value)
            return fetch_url_image(image.value, timeout=self._url_timeout, max_bytes=self._url_max_bytes)
        except ImageProblem as problem:
            log.debug("image refused (%s): %s", problem.code, problem.detail)
            raise _fail(problem.code) from None

    def _accept_image(self, image: Image | None, quality_control: str | None, liveness_control: str | None) -> str:
        quality = _control(quality_control, 222019)
        liveness = _control(liveness_control, 222020)
        face_token = self._resolve_image(image)
        if self._image_check is not None:
            code = self._image_check(face_token, quality, liveness)
            if code:
                raise _fail(code)
        return face_token

    # ---- faceset endpoints ----

    @_endpoint(Endpoint.USER_ADD)
    @_translate_db_errors
    def user_add(self, group_id: str, user_id: str, image: Image, *, user_info: str | None = None,
                 quality_control: str = NO_CONTROL, liveness_control: str = NO_CONTROL,
                 action_type: str | None = None) -> AddedFace:
        """APPEND (default) adds the face; REPLACE makes it the user's only face. Both create the user."""
        self._check_face_call(group_id, user_id, USER_ID_MAX_BYTES_ON_ADD, image, user_info)
        action = _action(action_type, ADD_ACTIONS)
        face_token = self._accept_image(image, quality_control, liveness_control)
        with self._write() as conn:
            group_seq = self._group_for_add(conn, group_id)
            user_seq = self._user_seq(conn, group_seq, user_id)
            if user_seq is not None and action == "APPEND":
                if conn.execute("SELECT 1 FROM faces WHERE user_seq = ? AND face_token = ?",
                                (user_seq, face_token)).fetchone():
                    raise _fail(223105)
                self._refuse_face_on_other_user(conn, group_seq, user_seq, face_token)
                self._refuse_beyond_cap(conn, user_seq)
                self._set_user_info(conn, user_seq, user_info, self.unknowns.add_without_info_clears)
            else:
                self._refuse_face_on_other_user(conn, group_seq, user_seq, face_token)
                user_seq = self._user_with_no_faces(conn, group_seq, user_seq, user_id, user_info,
                                                    self.unknowns.add_without_info_clears)
            self._insert_face(conn, user_seq, face_token)
        return AddedFace(face_token, location_for(face_token), new_log_id())

    @_endpoint(Endpoint.USER_UPDATE)
    @_translate_db_errors
    def user_update(self, group_id: str, user_id: str, image: Image, *, user_info: str | None = None,
                    quality_control: str = NO_CONTROL, liveness_control: str = NO_CONTROL,
                    action_type: str | None = None) -> AddedFace:
        """The image becomes the user's only face; UPDATE (default) needs the user, REPLACE registers it."""
        self._check_face_call(group_id, user_id, self._user_id_max_bytes, image, user_info)
        action = _action(action_type, UPDATE_ACTIONS)
        face_token = self._accept_image(image, quality_control, liveness_control)
        with self._write() as conn:
            group_seq = self._existing_group(conn, group_id)
            user_seq = self._user_seq(conn, group_seq, user_id)
            if user_seq is None and action == "UPDATE":
                raise _fail(223103)
            self._refuse_face_on_other_user(conn, group_seq, user_seq, face_token)
            user_seq = self._user_with_no_faces(conn, group_seq, user_seq, user_id, user_info,
                                                self.unknowns.update_without_info_clears)
            self._insert_face(conn, user_seq, face_token)
        return AddedFace(face_token, location_for(face_token), new_log_id())

    @staticmethod
    def _check_face_call(group_id: str, user_id: str, user_id_max_bytes: int, image: Image | None,
                         user_info: str | None) -> None:
        _require(("image", None if image is None else image.value),
                 ("image_type", _type_text(image)),
                 ("group_id", group_id), ("user_id", user_id))
        _image_type(image)
        _check_group_id(group_id)
        _check_user_id(user_id, user_id_max_bytes)
        _check_user_info(user_info)

    def _refuse_beyond_cap(self, conn: sqlite3.Connection, user_seq: int) -> None:
        if self.max_faces_per_user is None:
            return
        count = conn.execute("SELECT count(*) FROM faces WHERE user_seq = ?", (user_seq,)).fetchone()[0]
        if count >= self.max_faces_per_user:
            raise _fail(FACE_CAP_CODE, f"user already has {count} faces, the cap is {self.max_faces_per_user}")

    @staticmethod
    def _set_user_info(conn: sqlite3.Connection, user_seq: int, user_info: str | None, clear_when_missing: bool) -> None:
        if user_info is not None or clear_when_missing:
            conn.execute("UPDATE users SET user_info = ? WHERE seq = ?", (user_info or "", user_seq))

    def _user_with_no_faces(self, conn: sqlite3.Connection, group_seq: int, user_seq: int | None, user_id: str,
                            user_info: str | None, clear_when_missing: bool) -> int:
        """The user's row emptied of faces (its user_info set as asked), or a new user's row."""
        if user_seq is None:
            return conn.execute("INSERT INTO users (group_seq, user_id, user_info) VALUES (?, ?, ?)",
                                (group_seq, user_id, user_info or "")).lastrowid
        conn.execute("DELETE FROM faces WHERE user_seq = ?", (user_seq,))
        self._set_user_info(conn, user_seq, user_info, clear_when_missing)
        return user_seq

    def _group_for_add(self, conn: sqlite3.Connection, group_id: str) -> int:
        """The group a face is added to: 223100 while it is being deleted in the background, and when it
        is missing unless the harsh variant creates it on the fly."""
        row = conn.execute("SELECT seq, deleting_until FROM groups WHERE group_id = ?", (group_id,)).fetchone()
        if row is not None and row[1] is None:
            return row[0]
        if row is not None:
            now = self._clock()
            if row[1] > now:
                raise _fail(GROUP_BEING_DELETED_ADD_CODE, f"group {group_id} is being deleted in the background, "
                                                          f"about {max(1, round(row[1] - now))} s left")
            self._purge(conn, now)
        if not self.unknowns.add_creates_group:
            raise _fail(223100)
        return conn.execute("INSERT INTO groups (group_id) VALUES (?)", (group_id,)).lastrowid

    def _refuse_face_on_other_user(self, conn: sqlite3.Connection, group_seq: int, user_seq: int | None,
                                   face_token: str) -> None:
        """Harsh: one face belongs to at most one user of a group (223105 names the user holding it)."""
        if not self.unknowns.face_once_per_group:
            return
        holder = conn.execute("SELECT u.user_id FROM faces f JOIN users u ON u.seq = f.user_seq "
                              "WHERE u.group_seq = ? AND f.face_token = ? AND u.seq IS NOT ? LIMIT 1",
                              (group_seq, face_token, user_seq)).fetchone()
        if holder:
            raise _fail(FACE_ON_OTHER_USER_CODE, f"this face is on user {holder[0]} of this group")

    def _insert_face(self, conn: sqlite3.Connection, user_seq: int, face_token: str) -> None:
        conn.execute("INSERT INTO faces (user_seq, face_token, ctime) VALUES (?, ?, ?)",
                     (user_seq, face_token, self._now_text()))
        conn.execute("INSERT OR IGNORE INTO known_tokens (face_token) VALUES (?)", (face_token,))

    @_endpoint(Endpoint.FACE_DELETE)
    @_translate_db_errors
    def face_delete(self, group_id: str, user_id: str, face_token: str) -> Ack:
        _require(("user_id", user_id), ("group_id", group_id), ("face_token", face_token))
        _check_user_id(user_id, self._user_id_max_bytes)
        _check_group_id(group_id)
        _check_face_token(face_token)
        with self._write() as conn:
            group_seq = self._existing_group(conn, group_id)
            user_seq = self._existing_user(conn, group_seq, user_id)
            if conn.execute("DELETE FROM faces WHERE user_seq = ? AND face_token = ?",
                            (user_seq, face_token)).rowcount == 0:
                raise _fail(223106)
            if not conn.execute("SELECT 1 FROM faces WHERE user_seq = ? LIMIT 1", (user_seq,)).fetchone():
                conn.execute("DELETE FROM users WHERE seq = ?", (user_seq,))
        return Ack(new_log_id())

    @_endpoint(Endpoint.USER_GET)
    @_translate_db_errors
    def user_get(self, group_id: str, user_id: str) -> UserRecord:
        _require(("user_id", user_id), ("group_id", group_id))
        _check_user_id(user_id, self._user_id_max_bytes)
        _check_group_id(group_id, allow_all=True)
        query = ("SELECT g.group_id, u.user_info FROM users u JOIN groups g ON g.seq = u.group_seq "
                 "WHERE u.user_id = ? AND g.deleting_until IS NULL")
        params: tuple = (user_id,)
        if group_id != ALL_GROUPS:
            query += " AND g.group_id = ?"
            params += (group_id,)
        with self._read() as conn:
            rows = conn.execute(query + " ORDER BY g.seq", params).fetchall()
        if not rows:
            raise _fail(223103)
        return UserRecord(tuple(UserMembership(g, info) for g, info in rows), new_log_id())

    @_endpoint(Endpoint.FACE_GETLIST)
    @_translate_db_errors
    def face_getlist(self, group_id: str, user_id: str) -> FaceList:
        _require(("user_id", user_id), ("group_id", group_id))
        _check_user_id(user_id, self._user_id_max_bytes)
        _check_group_id(group_id)
        with self._read() as conn:
            group_seq = self._existing_group(conn, group_id)
            user_seq = self._existing_user(conn, group_seq, user_id)
            rows = conn.execute("SELECT face_token, ctime FROM faces WHERE user_seq = ? ORDER BY seq",
                                (user_seq,)).fetchall()
        return FaceList(tuple(FaceEntry(token, ctime) for token, ctime in rows), new_log_id())

    @_endpoint(Endpoint.GROUP_GETUSERS)
    @_translate_db_errors
    def group_getusers(self, group_id: str, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage:
        _require(("group_id", group_id))
        _check_group_id(group_id)
        first, count = _page(start, length, clamp=self.unknowns.clamp_page_length)
        with self._read() as conn:
            group_seq = self._existing_group(conn, group_id)
            rows = conn.execute("SELECT user_id FROM users WHERE group_seq = ? ORDER BY seq LIMIT ? OFFSET ?",
                                (group_seq, count, first)).fetchall()
        return IdPage(tuple(row[0] for row in rows), new_log_id())

    @_endpoint(Endpoint.USER_COPY)
    @_translate_db_errors
    def user_copy(self, user_id: str, src_group_id: str, dst_group_id: str) -> Ack:
        _require(("user_id", user_id), ("src_group_id", src_group_id), ("dst_group_id", dst_group_id))
        _check_user_id(user_id, self._user_id_max_bytes)
        _check_group_id(src_group_id)
        _check_group_id(dst_group_id)
        with self._write() as conn:
            src_seq = self._existing_group(conn, src_group_id)
            dst_seq = self._existing_group(conn, dst_group_id, missing=223111)
            row = conn.execute("SELECT seq, user_info FROM users WHERE group_seq = ? AND user_id = ?",
                               (src_seq, user_id)).fetchone()
            if row is None:
                raise _fail(223103)
            if self._user_seq(conn, dst_seq, user_id) is not None:
                raise _fail(223102)
            for (face_token,) in conn.execute("SELECT face_token FROM faces WHERE user_seq = ?", (row[0],)).fetchall():
                self._refuse_face_on_other_user(conn, dst_seq, None, face_token)
            copy_seq = conn.execute("INSERT INTO users (group_seq, user_id, user_info) VALUES (?, ?, ?)",
                                    (dst_seq, user_id, row[1])).lastrowid
            conn.execute("INSERT INTO faces (user_seq, face_token, ctime) "
                         "SELECT ?, face_token, ctime FROM faces WHERE user_seq = ? ORDER BY seq",
                         (copy_seq, row[0]))
        return Ack(new_log_id())

    @_endpoint(Endpoint.USER_DELETE)
    @_translate_db_errors
    def user_delete(self, group_id: str, user_id: str) -> Ack:
        _require(("group_id", group_id), ("user_id", user_id))
        _check_group_id(group_id, allow_all=True)
        _check_user_id(user_id, self._user_id_max_bytes)
        with self._write() as conn:
            if group_id == ALL_GROUPS:
                deleted = conn.execute(
                    "DELETE FROM users WHERE user_id = ? AND group_seq IN "
                    "(SELECT seq FROM groups WHERE deleting_until IS NULL)", (user_id,)).rowcount
                if deleted == 0:
                    raise _fail(223103)
            else:
                group_seq = self._existing_group(conn, group_id)
                if conn.execute("DELETE FROM users WHERE group_seq = ? AND user_id = ?",
                                (group_seq, user_id)).rowcount == 0:
                    raise _fail(223103)
        return Ack(new_log_id())

    @_endpoint(Endpoint.GROUP_ADD)
    @_translate_db_errors
    def group_add(self, group_id: str) -> Ack:
        _require(("group_id", group_id))
        _check_group_id(group_id)
        with self._write() as conn:
            now = self._clock()
            self._purge(conn, now)
            row = conn.execute("SELECT deleting_until FROM groups WHERE group_id = ?", (group_id,)).fetchone()
            if row is not None:
                if row[0] is None:
                    raise _fail(223101)
                code = (GROUP_BEING_DELETED_RECREATE_HARSH_CODE if self.unknowns.recreate_refused_while_deleting
                        else GROUP_BEING_DELETED_RECREATE_CODE)
                raise _fail(code, f"group {group_id} is being deleted in the background, "
                                  f"about {max(1, round(row[0] - now))} s left")
            conn.execute("INSERT INTO groups (group_id) VALUES (?)", (group_id,))
        return Ack(new_log_id())

    @_endpoint(Endpoint.GROUP_DELETE)
    @_translate_db_errors
    def group_delete(self, group_id: str) -> Ack:
        _require(("group_id", group_id))
        _check_group_id(group_id)
        with self._write() as conn:
            now = self._clock()
            self._purge(conn, now)
            group_seq = self._existing_group(conn, group_id)
            faces = 0
            if self.background_group_delete:
                faces = conn.execute("SELECT count(*) FROM faces f JOIN users u ON u.seq = f.user_seq "
                                     "WHERE u.group_seq = ?", (group_seq,)).fetchone()[0]
            if faces > BACKGROUND_DELETE_THRESHOLD:
                conn.execute("UPDATE groups SET deleting_until = ? WHERE seq = ?",
                             (now + faces / self.group_delete_rate, group_seq))
            else:
                conn.execute("DELETE FROM groups WHERE seq = ?", (group_seq,))
        return Ack(new_log_id())

    @_endpoint(Endpoint.GROUP_GETLIST)
    @_translate_db_errors
    def group_getlist(self, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage:
        first, count = _page(start, length, clamp=self.unknowns.clamp_page_length)
        with self._read() as conn:
            rows = conn.execute("SELECT group_id FROM groups WHERE deleting_until IS NULL "
                                "ORDER BY seq LIMIT ? OFFSET ?", (count, first)).fetchall()
        return IdPage(tuple(row[0] for row in rows), new_log_id())

    @_endpoint(Endpoint.DETECT)
    @_translate_db_errors
    def detect(self, image: Image) -> Detection:
        """One face per accepted image; its token becomes usable as a FACE_TOKEN image."""
        face_token = self._resolve_image(image, detecting=True)
        with self._write() as conn:
            conn.execute("INSERT OR IGNORE INTO known_tokens (face_token) VALUES (?)", (face_token,))
        return Detection((DetectedFace(face_token, location_for(face_token), 1.0),), new_log_id())

    # ---- background deletion ----

    @staticmethod
    def _purge(conn: sqlite3.Connection, now: float) -> None:
        """Drop groups whose background deletion has run its course (faces and users cascade)."""
        conn.execute("DELETE FROM groups WHERE deleting_until IS NOT NULL AND deleting_until <= ?", (now,))

    def _purge_finished_deletions(self) -> None:
        now = self._clock()
        with self._read() as conn:
            due = conn.execute("SELECT 1 FROM groups WHERE deleting_until <= ? LIMIT 1", (now,)).fetchone()
        if due:
            with self._write() as conn:
                self._purge(conn, now)

    # ---- introspection (emulator admin view, tests) ----

    @_translate_db_errors
    def counts(self) -> LibraryCounts:
        """Live groups, and the users and faces in them (groups being deleted are left out)."""
        with self._read() as conn:
            groups, users, faces = conn.execute(
                "SELECT (SELECT count(*) FROM groups WHERE deleting_until IS NULL), "
                "(SELECT count(*) FROM users u JOIN groups g ON g.seq = u.group_seq "
                " WHERE g.deleting_until IS NULL), "
                "(SELECT count(*) FROM faces f JOIN users u ON u.seq = f.user_seq "
                " JOIN groups g ON g.seq = u.group_seq WHERE g.deleting_until IS NULL)").fetchone()
            known = conn.execute("SELECT count(*) FROM known_tokens").fetchone()[0]
        return LibraryCounts(groups, users, faces, known)

    @_translate_db_errors
    def consistency_problems(self) -> list[str]:
        """Invariants the contract implies: every user has a face, no face or user without a parent."""
        checks = {
            "users without faces": "SELECT count(*) FROM users u WHERE NOT EXISTS "
                                   "(SELECT 1 FROM faces f WHERE f.user_seq = u.seq)",
            "faces without a user": "SELECT count(*) FROM faces f WHERE NOT EXISTS "
                                    "(SELECT 1 FROM users u WHERE u.seq = f.user_seq)",
            "users without a group": "SELECT count(*) FROM users u WHERE NOT EXISTS "
                                     "(SELECT 1 FROM groups g WHERE g.seq = u.group_seq)",
            "faces not in known_tokens": "SELECT count(*) FROM faces f WHERE NOT EXISTS "
                                         "(SELECT 1 FROM known_tokens k WHERE k.face_token = f.face_token)",
        }
        with self._read() as conn:
            found = {name: conn.execute(sql).fetchone()[0] for name, sql in checks.items()}
        return [f"{count} {name}" for name, count in found.items() if count]
