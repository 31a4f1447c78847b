"""The face-library interface every target implements, and its typed results.

A target is anything that speaks the Baidu Face V3 face-library contract (../shared/baidu-faceset-v3.md):
``BaiduClient`` over HTTP and ``LocalLibrary`` on SQLite. Methods map one to one onto endpoints; each
makes exactly one API call, raises a ``FaceApiError`` kind on failure and returns a frozen result that
carries the call's ``log_id`` so that reports can name it.
"""

from __future__ import annotations

import base64
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from facesync.logs import redact

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger("facesync.api")

PAGE_MAX = 1000  # the largest page group/getlist and group/getusers serve
PAGE_DEFAULT = 100  # the page they serve when no length is given
ID_PATTERN = re.compile(r"[A-Za-z0-9_]+")  # what group_id and user_id may hold (fullmatch)
FACE_TOKEN_PATTERN = re.compile(r"[0-9a-f]{32}")  # a well-formed face_token (fullmatch)
# Limits of the contract, in UTF-8 bytes: every check of them (the manifest's, the local library's) uses these.
GROUP_ID_MAX_BYTES = 48
USER_ID_MAX_BYTES = 48  # user/update, user/get, face/getlist, user/copy, user/delete, face/delete
USER_ID_MAX_BYTES_ON_ADD = 128  # user/add alone takes longer user_ids
USER_INFO_MAX_BYTES = 256
MAX_FACES_PER_USER = 20  # in one group: "组内每个uid下的人脸图片数目上限为20张"
ALL_GROUPS = "@ALL"  # group_id that makes user/get and user/delete act on every group
NO_CONTROL = "NONE"  # quality_control and liveness_control: no check, the default
CONTROL_LEVELS = (NO_CONTROL, "LOW", "NORMAL", "HIGH")  # any other value: 222019 or 222020


API_PATH = "/rest/2.0/face/v3/"  # every endpoint's path is under it
TOKEN_PATH = "/oauth/2.0/token"  # where an API key and secret key are exchanged for an access_token


class Endpoint:
    """The contract's endpoints, as paths under ``API_PATH``: the one table the client calls, the server
    answers, fault files and plans name."""

    USER_ADD = "faceset/user/add"
    USER_UPDATE = "faceset/user/update"
    FACE_DELETE = "faceset/face/delete"
    USER_GET = "faceset/user/get"
    FACE_GETLIST = "faceset/face/getlist"
    GROUP_GETUSERS = "faceset/group/getusers"
    USER_COPY = "faceset/user/copy"
    USER_DELETE = "faceset/user/delete"
    GROUP_ADD = "faceset/group/add"
    GROUP_DELETE = "faceset/group/delete"
    GROUP_GETLIST = "faceset/group/getlist"
    DETECT = "detect"


ENDPOINTS: tuple[str, ...] = tuple(value for name, value in vars(Endpoint).items() if name.isupper())
# the endpoints that change the library (the others only read it)
WRITE_ENDPOINTS: frozenset[str] = frozenset({
    Endpoint.USER_ADD, Endpoint.USER_UPDATE, Endpoint.FACE_DELETE, Endpoint.USER_COPY, Endpoint.USER_DELETE,
    Endpoint.GROUP_ADD, Endpoint.GROUP_DELETE,
})


class ImageType(str, Enum):
    BASE64 = "BASE64"
    URL = "URL"
    FACE_TOKEN = "FACE_TOKEN"


@dataclass(frozen=True, slots=True)
class Image:
    """An image as the API takes it: ``value`` is base64 text, a URL, or a face_token."""

    value: str
    type: ImageType

    @classmethod
    def from_bytes(cls, data: bytes) -> Image:
        return cls(base64.b64encode(data).decode("ascii"), ImageType.BASE64)

    @classmethod
    def from_url(cls, url: str) -> Image:
        return cls(url, ImageType.URL)

    @classmethod
    def from_face_token(cls, face_token: str) -> Image:
        return cls(face_token, ImageType.FACE_TOKEN)

    def __repr__(self) -> str:  # base64 payloads are megabytes; never dump them into logs
        shown = self.value if self.type is not ImageType.BASE64 else f"<{len(self.value)} base64 chars>"
        return f"Image({self.type.value}, {shown})"


@dataclass(frozen=True, slots=True)
class Location:
    left: float
    top: float
    width: float
    height: float
    rotation: int


@dataclass(frozen=True, slots=True)
class Ack:
    """The answer of a call whose result is null (deletes, copy, group/add)."""

    log_id: int


@dataclass(frozen=True, slots=True)
class AddedFace:
    """user/add and user/update."""

    face_token: str
    location: Location
    log_id: int


@dataclass(frozen=True, slots=True)
class FaceEntry:
    face_token: str
    ctime: str  # "YYYY-MM-DD HH:MM:SS"


@dataclass(frozen=True, slots=True)
class FaceList:
    """face/getlist."""

    faces: tuple[FaceEntry, ...]
    log_id: int


@dataclass(frozen=True, slots=True)
class UserMembership:
    group_id: str
    user_info: str


@dataclass(frozen=True, slots=True)
class UserRecord:
    """user/get: the user's user_info in one group, or in every group with ``@ALL``."""

    memberships: tuple[UserMembership, ...]
    log_id: int


@dataclass(frozen=True, slots=True)
class IdPage:
    """group/getlist (group ids) and group/getusers (user ids)."""

    ids: tuple[str, ...]
    log_id: int


@dataclass(frozen=True, slots=True)
class DetectedFace:
    face_token: str
    location: Location
    face_probability: float


@dataclass(frozen=True, slots=True)
class Detection:
    """detect."""

    faces: tuple[DetectedFace, ...]
    log_id: int

    @property
    def face_num(self) -> int:
        return len(self.faces)


@dataclass(frozen=True)
class CallRecord:
    """One attempt at an endpoint, as a library's observers see it, for reports and counts.

    ``error_code``: 0 for success, the Baidu code of an error answer, None when no usable answer came;
    ``attempt``: 1 for a call's first request, counting up through its retries and token renewals."""

    endpoint: str
    error_code: int | None
    log_id: int | None
    duration_s: float
    attempt: int


CallObserver = Callable[[CallRecord], None]


@runtime_checkable
class FaceLibrary(Protocol):
    """One Baidu face library. Parameter names follow the API's; each method is one call.

    Every implementation can be closed (``close()``, or a ``with`` block) and observed: each of its
    ``observers`` is called, in the calling thread, with a ``CallRecord`` for every attempt at an endpoint.
    Reading ``identity`` never makes a call."""

    observers: list[CallObserver]

    @property
    def identity(self) -> str:
        """Which library this is, for plans and messages (never containing a secret)."""

    def close(self) -> None:
        """Release connections and files; the library cannot be used afterwards."""

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...

    def user_add(self, group_id: str, user_id: str, image: Image, *, user_info: str | None = None,
                 quality_control: str = NO_CONTROL, liveness_control: str = NO_CONTROL) -> AddedFace: ...

    def user_update(self, group_id: str, user_id: str, image: Image, *, user_info: str | None = None,
                    quality_control: str = NO_CONTROL, liveness_control: str = NO_CONTROL) -> AddedFace: ...

    def face_delete(self, group_id: str, user_id: str, face_token: str) -> Ack: ...

    def user_get(self, group_id: str, user_id: str) -> UserRecord: ...

    def face_getlist(self, group_id: str, user_id: str) -> FaceList: ...

    def group_getusers(self, group_id: str, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage: ...

    def user_copy(self, user_id: str, src_group_id: str, dst_group_id: str) -> Ack: ...

    def user_delete(self, group_id: str, user_id: str) -> Ack: ...

    def group_add(self, group_id: str) -> Ack: ...

    def group_delete(self, group_id: str) -> Ack: ...

    def group_getlist(self, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage: ...

    def detect(self, image: Image) -> Detection: ...


class LibraryBase:
    """What every ``FaceLibrary`` implementation shares: its call observers and ``with`` use."""

    def __init__(self) -> None:
        self.observers: list[CallObserver] = []

    def close(self) -> None:
        """Nothing to release here; implementations that hold something say so."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _notify(self, record: CallRecord, *more: CallObserver) -> None:
        """Tell every observer (and ``more``) of ``record``; an observer that fails is logged, not raised:
        it must not turn a call the library carried out into a failure."""
        for observer in (*self.observers, *more):
            try:
                observer(record)
            except Exception as failure:  # noqa: BLE001
                log.warning("call observer failed on %s: %s", record.endpoint, redact(repr(failure)))


def iter_group_ids(library: FaceLibrary) -> Iterator[str]:
    """Every group id of the library, in pages of 1000."""
    yield from _paged(lambda start: library.group_getlist(start, PAGE_MAX))


def iter_user_ids(library: FaceLibrary, group_id: str) -> Iterator[str]:
    """Every user id of ``group_id``, in pages of 1000."""
    yield from _paged(lambda start: library.group_getusers(group_id, start, PAGE_MAX))


def _paged(fetch) -> Iterator[str]:
    start = 0
    while True:
        page = fetch(start)
        yield from page.ids
        if len(page.ids) < PAGE_MAX:  # a short page is the last: no extra call to learn it is empty
            return
        start += PAGE_MAX
