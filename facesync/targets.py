"""Which face library a command talks to, and opening it.

A target is ``local:PATH`` (the embedded SQLite library), ``baidu`` (https://aip.baidubce.com), or the
``http(s)://host:port`` base URL of any Baidu-compatible server (``facesync serve``, say). The first
one given wins: ``--target``, then ``FACESYNC_TARGET``, then the manifest's ``target:``, then the default.

Credentials go only where a person sent them: a manifest is reviewed text anyone can propose, so its
``target:`` may name ``local:PATH`` or ``baidu`` but never another server; such a server is refused
(with a hint) unless ``--target`` or ``FACESYNC_TARGET`` chose it.

Reading never creates a library: ``open_target(..., if_missing=...)`` says what a ``local:`` library
that does not exist yet becomes: created (apply), read as empty and created only by a first write
(plan), or an error (export, snapshot).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from facesync.api.errors import FaceApiError, error_for
from facesync.api.protocol import (
    ALL_GROUPS,
    PAGE_DEFAULT,
    Ack,
    AddedFace,
    CallRecord,
    Detection,
    Endpoint,
    FaceLibrary,
    FaceList,
    IdPage,
    LibraryBase,
    UserRecord,
)
from facesync.errors import ConfigError

DEFAULT_TARGET = "local:.facesync/library.db"
BAIDU_URL = "https://aip.baidubce.com"
REMOTE_DEFAULT_QPS = 10.0
CREATE, EMPTY, ERROR = "create", "empty", "error"  # open_target's if_missing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetSpec:
    """A parsed target: ``kind`` is "local" or "http"; ``location`` a file path or a base URL."""

    text: str
    kind: str
    location: str

    @property
    def is_local(self) -> bool:
        return self.kind == "local"

    @property
    def is_baidu(self) -> bool:
        return self.kind == "http" and self.location == BAIDU_URL


def parse_target(text: str) -> TargetSpec:
    if text.startswith("local:") and len(text) > len("local:"):
        return TargetSpec(text, "local", text[len("local:"):])
    if text == "baidu":
        return TargetSpec(text, "http", BAIDU_URL)
    if text.startswith(("http://", "https://")):
        return TargetSpec(text, "http", text.rstrip("/"))
    raise ConfigError(
        f"unknown target {text!r}",
        hint="use local:PATH, baidu, or a base URL such as http://127.0.0.1:8000",
    )


def target_of_identity(identity: str) -> TargetSpec | None:
    """The target a library's ``identity`` names ("local:PATH", "<base URL> app <id>"), or None when it
    names none this facesync knows (a plan or snapshot written elsewhere)."""
    try:
        return parse_target(identity.split(" ")[0])
    except ConfigError:
        return None


def estimate_qps(spec: TargetSpec | None, qps: float | None) -> float | None:
    """The rate a plan's time estimate assumes: ``qps`` when given, else the remote default (also for a
    target not known); a local library has no limit."""
    if qps is not None:
        return qps
    return None if spec is not None and spec.is_local else REMOTE_DEFAULT_QPS


def choose_target(flag: str | None, manifest_target: str | None = None) -> TargetSpec:
    """The target in force, by the documented order of precedence."""
    if chosen_outside_manifest(flag):
        return parse_target(flag or os.environ["FACESYNC_TARGET"])
    if manifest_target:
        return _manifest_target(manifest_target)
    default = parse_target(DEFAULT_TARGET)
    # A notice once per library: when it does not exist yet (this run may create it), else only at -v.
    level = logging.INFO if os.path.exists(default.location) else logging.WARNING
    log.log(level, "no target given: using the embedded local library %s", DEFAULT_TARGET)
    return default


def chosen_outside_manifest(flag: str | None) -> bool:
    """True when --target or FACESYNC_TARGET names the target, so the manifest's is not used."""
    return bool(flag or os.environ.get("FACESYNC_TARGET"))


def _manifest_target(text: str) -> TargetSpec:
    """The manifest's ``target:``, refused when it would send credentials to a server nobody chose."""
    refused = manifest_target_problem(text)
    if refused is not None:
        raise refused
    return parse_target(text)


def manifest_target_problem(text: str) -> ConfigError | None:
    """Why a manifest may not name ``text`` as its target (None: it may): unknown, or a server that
    would receive credentials without a person choosing it."""
    try:
        spec = parse_target(text)
    except ConfigError as problem:
        return problem
    if spec.is_local or spec.is_baidu:
        return None
    shown = text if text.isprintable() else repr(text)
    return ConfigError(
        f"the manifest names the target {shown}: facesync sends credentials only to Baidu or to a server "
        "chosen outside the manifest",
        hint=f"if you trust that server, choose it yourself: --target {shown} (or FACESYNC_TARGET={shown}); "
             "a manifest's target: may only be local:PATH or baidu",
    )


def open_target(spec: TargetSpec, *, qps: float | None = None, concurrency: int = 8,
                if_missing: str = CREATE) -> FaceLibrary:
    """The FaceLibrary for ``spec``. Remote targets read credentials from the environment.

    ``if_missing``: what a ``local:`` library that does not exist yet becomes: ``CREATE`` it, read it
    as ``EMPTY`` until something writes (reads leave no file or folder), or an ``ERROR``.
    """
    if spec.is_local:
        from facesync.local.store import LocalLibrary
        from facesync.local.unknowns import unknowns_from_environment

        if qps is not None:  # nothing to pace: only the plan's time estimate uses it
            log.warning("--qps %g does not apply to %s: a local library has no rate limit, so calls are "
                        "not slowed (the plan's time estimate assumes it)", qps, spec.text)

        def create() -> FaceLibrary:
            return LocalLibrary(spec.location, unknowns=unknowns_from_environment())

        if if_missing != CREATE and not os.path.exists(spec.location):
            missing = PendingLocalLibrary(spec.location, create)
            if if_missing == ERROR:
                raise ConfigError(f"the library {missing.identity} does not exist",
                                  hint="check --target local:PATH (or FACESYNC_TARGET); facesync apply creates a "
                                       "library, nothing else does")
            log.warning("the library %s does not exist yet: it will be created by apply", missing.identity)
            return missing
        return create()
    from facesync.api.baidu import BaiduClient

    client = BaiduClient.from_environment(
        spec.location, qps=REMOTE_DEFAULT_QPS if qps is None else qps, concurrency=concurrency
    )
    try:
        client.connect()  # the token now: a wrong URL or key fails here, and the identity names the app
    except BaseException:
        client.close()
        raise
    return client


class PendingLocalLibrary(LibraryBase):
    """A ``local:`` library that does not exist yet: the empty library until a write creates it.

    Reads answer as an empty library does (no group; 223100/223103 for anything in one) and touch
    nothing on disk, so a plan leaves no file or folder behind. The first write (or detect, which
    records a token) creates the library through ``create`` and from then on every call goes to it,
    so a plan made here can still be applied on the same object. ``identity`` is the one the created
    library has, so plan and apply share one token cache. Its observers see the empty library's answers,
    then the created library's calls.
    """

    def __init__(self, path: str, create: Callable[[], FaceLibrary]):
        super().__init__()
        self.path = os.path.abspath(path)
        self._create = create
        self._created: FaceLibrary | None = None
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        return f"local:{self.path}"

    def __repr__(self) -> str:
        return f"PendingLocalLibrary({self.path!r})"

    def _library(self) -> FaceLibrary:
        with self._lock:
            if self._created is None:
                self._created = self._create()
                self._created.observers = self.observers  # one list: whoever observes this sees it all
            return self._created

    def close(self) -> None:
        if self._created is not None:
            self._created.close()

    def _answered(self, endpoint: str) -> None:
        """Report the empty library's answer to the observers, as the created library reports its own."""
        self._notify(CallRecord(endpoint, 0, None, 0.0, 1))

    def _refused(self, endpoint: str, code: int) -> FaceApiError:
        """The empty library's error answer, reported to the observers."""
        self._notify(CallRecord(endpoint, code, None, 0.0, 1))
        return error_for(code)

    # ---- reads: the empty library until it exists ----

    def group_getlist(self, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage:
        if self._created is not None:
            return self._created.group_getlist(start, length)
        self._answered(Endpoint.GROUP_GETLIST)
        return IdPage((), 0)

    def group_getusers(self, group_id: str, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage:
        if self._created is not None:
            return self._created.group_getusers(group_id, start, length)
        raise self._refused(Endpoint.GROUP_GETUSERS, 223100)

    def user_get(self, group_id: str, user_id: str) -> UserRecord:
        if self._created is not None:
            return self._created.user_get(group_id, user_id)
        raise self._refused(Endpoint.USER_GET, 223103 if group_id == ALL_GROUPS else 223100)

    def face_getlist(self, group_id: str, user_id: str) -> FaceList:
        if self._created is not None:
            return self._created.face_getlist(group_id, user_id)
        raise self._refused(Endpoint.FACE_GETLIST, 223100)

    # ---- writes: create the library first ----

    def user_add(self, group_id, user_id, image, **options) -> AddedFace:
        return self._library().user_add(group_id, user_id, image, **options)

    def user_update(self, group_id, user_id, image, **options) -> AddedFace:
        return self._library().user_update(group_id, user_id, image, **options)

    def face_delete(self, group_id: str, user_id: str, face_token: str) -> Ack:
        return self._library().face_delete(group_id, user_id, face_token)

    def user_copy(self, user_id: str, src_group_id: str, dst_group_id: str) -> Ack:
        return self._library().user_copy(user_id, src_group_id, dst_group_id)

    def user_delete(self, group_id: str, user_id: str) -> Ack:
        return self._library().user_delete(group_id, user_id)

    def group_add(self, group_id: str) -> Ack:
        return self._library().group_add(group_id)

    def group_delete(self, group_id: str) -> Ack:
        return self._library().group_delete(group_id)

    def detect(self, image) -> Detection:
        return self._library().detect(image)
