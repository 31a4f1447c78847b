"""Baidu's wire protocol in front of a local face library: the emulator behind ``facesync serve``.

It answers the token endpoint and the twelve face endpoints exactly as the contract
(shared/baidu-faceset-v3.md, Transport) says, so the official SDK and facesync's HTTP client both work
against it, and it adds what tests and benchmarks need: a QPS limit, latency, injected faults (faults.py),
call counters and a journal of every mutating call.

Choices where the contract is silent:
- Tokens are signed, not stored: the 32 hex of ``24.<hex>.<ttl>.<time>.<n>-<app id>`` is an HMAC of the
  rest under a key drawn at random when the server starts, mixed with the secret key. Nobody can make
  a token offline, not even with the well-known default keys; a token of another server run, of other
  keys or a forged one is 110 (clients fetch a new one), and one older than its ttl is 111.
- The admin endpoints (``/_facesync/...``) want a valid access_token too (query or body), and answer
  HTTP 401 without one: the journal holds user_info, and reset clears what tests rely on.
- A request the server refuses before reading its body (HTTP 400 or 413) is answered with
  ``Connection: close`` and the connection is closed: the unread body is never read as further requests.
  A body that is not JSON, or is nested too deep to parse, counts as no parameters (so the call is
  answered with the error its missing parameters earn). A connection idle for ``idle_timeout`` seconds
  is closed, so idle sockets do not keep threads for ever.
- Order of checks for an API call: unknown path (3), access_token (100/110/111), the QPS window (18),
  injected faults, then the library's own checks. Latency delays every API answer, errors included.
- QPS: a sliding one-second window of *admitted* calls; a call is refused with 18 when N calls were
  admitted in the second before it. Refused calls do not count: Baidu's limiter lets a client that
  backs off in again at once, which is what a client's back-off is tested against.
- Stats count every API request received (faulted, refused and malformed ones included);
  ``max_calls_in_one_second`` is the most admitted calls seen in any one-second window.
- The journal holds every mutating call received, with ``executed`` (it reached the library) and
  ``fault``; a call with executed true and error_code 0 changed the library, including a
  ``drop_after_commit`` whose answer was lost (error_code 0, fault "drop_after_commit"). Calls dropped or
  answered with 502 before running have error_code null. Parameters are kept except image and
  access_token. ``seq`` keeps growing across resets and, with a journal file, across restarts.
- A JSON body is read whatever its charset; a body of another type is read as JSON when it looks like
  JSON, else as a form. Query parameters and body parameters are merged, the body winning.
- A bug in the library is answered as error 1 ("Unknown error") and logged; the server keeps serving.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import socket
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from facesync.api.errors import ACTION_TYPE_CODE, FaceApiError, error_for, message_for
from facesync.api.protocol import (
    API_PATH,
    ENDPOINTS,
    NO_CONTROL,
    PAGE_DEFAULT,
    TOKEN_PATH,
    WRITE_ENDPOINTS,
    Ack,
    AddedFace,
    Detection,
    Endpoint,
    FaceLibrary,
    FaceList,
    IdPage,
    Image,
    ImageType,
    Location,
    UserRecord,
)
from facesync.local.faults import Fault, FaultInjector, FaultKind
from facesync.local.store import new_log_id

log = logging.getLogger("facesync.serve")

ADMIN_PREFIX = "/_facesync/"
LIBRARY_THREADS = 8
DEFAULT_TOKEN_TTL = 2592000  # 30 days, as Baidu's tokens
DEFAULT_IDLE_TIMEOUT = 30.0  # seconds a keep-alive connection may wait for its next request
MAX_BODY_BYTES = 16 * 1024 * 1024  # above Baidu's 10 MB request limit; protects the process, not the contract
TOKEN_SCOPE = ("public brain_all_scope vis-faceverify_FACE_V3 vis-faceverify_faceverify_h5-face-liveness "
               "wise_adapt lebo_resource_base lightservice_public oauth_sessionkey")
_TOKEN_PATTERN = re.compile(r"^24\.([0-9a-f]{32})\.(\d+)\.(\d+)\.(\d+)-(\S+)$")
_BAD_GATEWAY = (b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
                b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    api_key: str = field(repr=False)
    secret_key: str = field(repr=False)
    app_id: str
    token_ttl: int = DEFAULT_TOKEN_TTL
    qps: int | None = None
    latency_ms: int = 0
    journal_path: str | None = None
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT


class TokenAuthority:
    """Issues and checks access tokens for one (API key, secret key, app id)."""

    def __init__(self, settings: ServerSettings):
        self._settings = settings
        # A fresh key per server run: tokens cannot be computed from the (possibly public) secret key.
        self._signing_key = hmac.new(secrets.token_bytes(32), settings.secret_key.encode(), hashlib.sha256).digest()

    def issue(self, client_id: str | None, client_secret: str | None) -> tuple[int, dict]:
        """(HTTP status, JSON body) of the token endpoint."""
        settings = self._settings
        if not client_id or not hmac.compare_digest(client_id.encode(), settings.api_key.encode()):
            return 401, {"error": "invalid_client", "error_description": "unknown client id"}
        if not client_secret or not hmac.compare_digest(client_secret.encode(), settings.secret_key.encode()):
            return 401, {"error": "invalid_client", "error_description": "Client authentication failed"}
        issued = int(time.time())
        serial = secrets.randbelow(900000) + 100000
        rest = f"{settings.token_ttl}.{issued}.{serial}-{settings.app_id}"
        refresh_rest = f"315360000.{issued}.{serial}-{settings.app_id}"
        return 200, {
            "refresh_token": f"25.{self._sign(refresh_rest)}.{refresh_rest}",
            "expires_in": settings.token_ttl,
            "session_key": secrets.token_hex(32),
            "access_token": f"24.{self._sign(rest)}.{rest}",
            "scope": TOKEN_SCOPE,
            "session_secret": secrets.token_hex(16),
        }

    def check(self, token: str | None) -> int:
        """0 when ``token`` is valid now, else the error code: 100 missing, 110 unknown, 111 expired."""
        if not token:
            return 100
        found = _TOKEN_PATTERN.match(token)
        if not found:
            return 110
        signature, ttl, issued, _, app_id = found.groups()
        rest = token.split(".", 2)[2]
        if app_id != self._settings.app_id or not hmac.compare_digest(signature, self._sign(rest)):
            return 110
        # ``issued`` is whole seconds, cut down: the extra second keeps every token valid for at least
        # the expires_in it announced, never a moment less.
        return 111 if time.time() >= int(issued) + int(ttl) + 1 else 0

    def _sign(self, text: str) -> str:
        return hmac.new(self._signing_key, text.encode(), hashlib.md5).hexdigest()


class CallWindow:
    """The calls admitted in the last second; refuses a call above ``qps`` of them."""

    def __init__(self, qps: int | None):
        self.qps = qps
        self._admitted: deque[float] = deque()
        self._lock = threading.Lock()
        self.max_in_one_second = 0

    def admit(self) -> bool:
        now = time.monotonic()
        with self._lock:
            while self._admitted and self._admitted[0] <= now - 1.0:
                self._admitted.popleft()
            if self.qps is not None and len(self._admitted) >= self.qps:
                return False
            self._admitted.append(now)
            self.max_in_one_second = max(self.max_in_one_second, len(self._admitted))
            return True

    def reset(self) -> None:
        with self._lock:
            self._admitted.clear()
            self.max_in_one_second = 0


class Stats:
    """What the admin API reports: calls per endpoint, error codes, faults, QPS refusals."""

    def __init__(self, window: CallWindow):
        self._window = window
        self._lock = threading.Lock()
        self._connections = 0  # open client connections: not reset, it is a gauge
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self._counters: Counter[str] = Counter()
            self._errors: Counter[str] = Counter()
            self._faults: Counter[str] = Counter()
            self._token_requests = 0
            self._qps_rejections = 0
        self._window.reset()

    def connection_opened(self) -> None:
        with self._lock:
            self._connections += 1

    def connection_closed(self) -> None:
        with self._lock:
            self._connections -= 1

    def count_call(self, endpoint: str) -> None:
        with self._lock:
            self._counters[endpoint] += 1

    def count_token_request(self) -> None:
        with self._lock:
            self._token_requests += 1

    def count_error(self, code: int) -> None:
        with self._lock:
            self._errors[str(code)] += 1
            if code == 18:
                self._qps_rejections += 1

    def count_fault(self, kind: FaultKind) -> None:
        with self._lock:
            self._faults[kind.value] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "counters": dict(self._counters),
                "total": sum(self._counters.values()),
                "errors": dict(self._errors),
                "faults": dict(self._faults),
                "qps_rejections": self._qps_rejections,
                "max_calls_in_one_second": self._window.max_in_one_second,
                "token_requests": self._token_requests,
                "open_connections": self._connections,
            }


class Journal:
    """Every mutating call, in the order answered; kept in memory and, optionally, in a JSON-lines file."""

    def __init__(self, path: str | None = None):
        self._lock = threading.Lock()
        self._entries: list[dict] = []
        self._file = None
        self._seq = 0
        if path:
            self._seq = _last_seq(Path(path))
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (open for the server's lifetime)

    def record(self, endpoint: str, params: dict, error_code: int | None, log_id: int, *,
               executed: bool, fault: FaultKind | None) -> None:
        with self._lock:
            self._seq += 1
            entry = {"seq": self._seq, "time": round(time.time(), 3), "endpoint": endpoint, "params": params,
                     "error_code": error_code, "log_id": log_id, "executed": executed,
                     "fault": fault.value if fault else None}
            self._entries.append(entry)
            if self._file is not None:
                self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self._file.flush()

    def entries(self) -> list[dict]:
        with self._lock:
            return list(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


def _last_seq(path: Path) -> int:
    try:
        with open(path, "rb") as lines:
            last = b""
            for line in lines:
                if line.strip():
                    last = line
        return int(json.loads(last)["seq"]) if last else 0
    except (OSError, ValueError, KeyError, TypeError):
        return 0


# ---- parameters and results of the face endpoints ---------------------------------------------------

_FORMAT_CODES = {"action_type": ACTION_TYPE_CODE, "group_id": 222006, "src_group_id": 222006, "dst_group_id": 222006, "user_id": 222018,
                 "user_info": 222010, "image": 222013, "image_type": 222015, "quality_control": 222019,
                 "liveness_control": 222020, "face_token": 222025, "start": 222002, "length": 222003}

# endpoint -> the parameters the journal keeps (never image, never access_token)
_JOURNALED_PARAMS = {
    Endpoint.USER_ADD: ("group_id", "user_id", "user_info", "image_type", "quality_control",
                        "liveness_control", "action_type"),
    Endpoint.USER_UPDATE: ("group_id", "user_id", "user_info", "image_type", "quality_control",
                           "liveness_control", "action_type"),
    Endpoint.FACE_DELETE: ("group_id", "user_id", "face_token"),
    Endpoint.USER_COPY: ("user_id", "src_group_id", "dst_group_id"),
    Endpoint.USER_DELETE: ("group_id", "user_id"),
    Endpoint.GROUP_ADD: ("group_id",),
    Endpoint.GROUP_DELETE: ("group_id",),
}


class Params:
    """The request's parameters, read the way Baidu reads them: strings, numbers for start/length."""

    def __init__(self, values: dict[str, Any]):
        self.values = values

    def text(self, name: str) -> str | None:
        value = self.values.get(name)
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise _format_error(name)

    def option(self, name: str) -> str:
        return self.text(name) or NO_CONTROL

    def number(self, name: str, default: int) -> int:
        value = self.values.get(name)
        if value is None or value == "":
            return default
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            return int(value)
        raise _format_error(name)

    def image(self) -> Image:
        """The image as given; the library judges a missing or unknown image_type (222001 / 222015)."""
        kind = self.text("image_type") or ""
        known = kind.upper() in ImageType.__members__
        return Image(self.text("image") or "", ImageType(kind.upper()) if known else kind)

    def journaled(self, endpoint: str) -> dict:
        return {name: self.values[name] for name in _JOURNALED_PARAMS.get(endpoint, ()) if name in self.values}


def _format_error(name: str) -> FaceApiError:
    code = _FORMAT_CODES.get(name, 222001)
    return error_for(code, message_for(code, param=name) if code == 222001 else None, new_log_id())


def _location(location: Location) -> dict:
    return {"left": location.left, "top": location.top, "width": location.width, "height": location.height,
            "rotation": location.rotation}


def _added(answer: AddedFace) -> dict:
    return {"face_token": answer.face_token, "location": _location(answer.location)}


def _user_list(answer: UserRecord) -> dict:
    return {"user_list": [{"user_info": m.user_info, "group_id": m.group_id} for m in answer.memberships]}


def _face_list(answer: FaceList) -> dict:
    return {"face_list": [{"face_token": face.face_token, "ctime": face.ctime} for face in answer.faces]}


def _detection(answer: Detection) -> dict:
    return {"face_num": answer.face_num, "face_list": [
        {"face_token": face.face_token, "location": _location(face.location),
         "face_probability": face.face_probability, "angle": {"yaw": 0.0, "pitch": 0.0, "roll": 0.0}}
        for face in answer.faces]}


def _ids(key: str) -> Callable[[IdPage], dict]:
    return lambda page: {key: list(page.ids)}


def _null(answer: Ack) -> None:
    return None


# endpoint -> (call the library with the request's parameters, the result object of its answer)
Handler = tuple[Callable[[FaceLibrary, Params], Any], Callable[[Any], dict | None]]
HANDLERS: dict[str, Handler] = {
    Endpoint.USER_ADD: (lambda lib, p: lib.user_add(
        p.text("group_id"), p.text("user_id"), p.image(), user_info=p.text("user_info"),
        quality_control=p.option("quality_control"), liveness_control=p.option("liveness_control"),
        action_type=p.text("action_type")), _added),
    Endpoint.USER_UPDATE: (lambda lib, p: lib.user_update(
        p.text("group_id"), p.text("user_id"), p.image(), user_info=p.text("user_info"),
        quality_control=p.option("quality_control"), liveness_control=p.option("liveness_control"),
        action_type=p.text("action_type")), _added),
    Endpoint.FACE_DELETE: (lambda lib, p: lib.face_delete(
        p.text("group_id"), p.text("user_id"), p.text("face_token")), _null),
    Endpoint.USER_GET: (lambda lib, p: lib.user_get(p.text("group_id"), p.text("user_id")), _user_list),
    Endpoint.FACE_GETLIST: (lambda lib, p: lib.face_getlist(p.text("group_id"), p.text("user_id")),
                            _face_list),
    Endpoint.GROUP_GETUSERS: (lambda lib, p: lib.group_getusers(
        p.text("group_id"), p.number("start", 0), p.number("length", PAGE_DEFAULT)), _ids("user_id_list")),
    Endpoint.USER_COPY: (lambda lib, p: lib.user_copy(
        p.text("user_id"), p.text("src_group_id"), p.text("dst_group_id")), _null),
    Endpoint.USER_DELETE: (lambda lib, p: lib.user_delete(p.text("group_id"), p.text("user_id")), _null),
    Endpoint.GROUP_ADD: (lambda lib, p: lib.group_add(p.text("group_id")), _null),
    Endpoint.GROUP_DELETE: (lambda lib, p: lib.group_delete(p.text("group_id")), _null),
    Endpoint.GROUP_GETLIST: (lambda lib, p: lib.group_getlist(
        p.number("start", 0), p.number("length", PAGE_DEFAULT)), _ids("group_id_list")),
    Endpoint.DETECT: (lambda lib, p: lib.detect(p.image()), _detection),
}
assert set(HANDLERS) == set(ENDPOINTS)


def envelope(error_code: int, error_msg: str, log_id: int, result: dict | None = None) -> dict:
    return {"error_code": error_code, "error_msg": error_msg, "log_id": log_id, "timestamp": int(time.time()),
            "cached": 0, "result": result if error_code == 0 else None}


_FAULTS_BEFORE_RUN = frozenset({FaultKind.ERROR, FaultKind.HTTP_502, FaultKind.DROP})


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one API call is answered: an envelope, a 502 page, or nothing (the connection is closed)."""

    body: dict | None
    fault: FaultKind | None = None

    @property
    def dropped(self) -> bool:
        return self.fault in (FaultKind.DROP, FaultKind.DROP_AFTER_COMMIT)


class FaceApi:
    """The face endpoints with auth, QPS, faults, latency, counters and journal around the library."""

    def __init__(self, library: FaceLibrary, settings: ServerSettings, faults: FaultInjector | None = None):
        self.library = library
        self.settings = settings
        self.tokens = TokenAuthority(settings)
        self.window = CallWindow(settings.qps)
        self.stats = Stats(self.window)
        self.journal = Journal(settings.journal_path)
        self.faults = faults
        # Library calls run on a few long-lived threads: the library keeps one SQLite connection per
        # thread, and the HTTP server's thread-per-connection would otherwise open one per client socket.
        self._workers = ThreadPoolExecutor(max_workers=LIBRARY_THREADS, thread_name_prefix="facesync-library")

    def token(self, params: dict[str, str]) -> tuple[int, dict]:
        self.stats.count_token_request()
        if params.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "The authorization grant type is not supported"}
        return self.tokens.issue(params.get("client_id"), params.get("client_secret"))

    def call(self, endpoint: str, values: dict[str, Any]) -> Outcome:
        """Answer one API call; never raises."""
        if endpoint not in HANDLERS:
            self.stats.count_call("(unsupported)")
            return self._error(3, message_for(3), new_log_id())
        self.stats.count_call(endpoint)
        params = Params(values)
        outcome, executed = self._run(endpoint, params)
        if endpoint in WRITE_ENDPOINTS:
            body = outcome.body or {}
            self.journal.record(endpoint, params.journaled(endpoint), body.get("error_code"),
                                body.get("log_id") or new_log_id(), executed=executed, fault=outcome.fault)
        return outcome

    def _run(self, endpoint: str, params: Params) -> tuple[Outcome, bool]:
        """The outcome, and whether the call reached the library."""
        refusal = self.tokens.check(_as_text(params.values.get("access_token"))) or (
            0 if self.window.admit() else 18)
        if refusal:
            self._sleep(0)
            return self._error(refusal, message_for(refusal), new_log_id()), False
        fault = self.faults.decide(endpoint) if self.faults else None
        if fault is None:
            self._sleep(0)
            return self._execute(endpoint, params), True
        self.stats.count_fault(fault.kind)
        self._sleep(fault.delay_ms)
        if fault.kind in _FAULTS_BEFORE_RUN:
            return self._faulted(fault), False
        return Outcome(self._execute(endpoint, params).body, fault.kind), True

    def _execute(self, endpoint: str, params: Params) -> Outcome:
        run, render = HANDLERS[endpoint]
        try:
            answer = self._workers.submit(run, self.library, params).result()
        except FaceApiError as error:
            return self._error(error.error_code, error.error_msg, error.log_id or new_log_id())
        except Exception:  # a bug below us: answer as Baidu does for the unexpected, and keep serving
            log.exception("%s failed", endpoint)
            return self._error(1, message_for(1), new_log_id())
        return Outcome(envelope(0, "SUCCESS", answer.log_id, render(answer)))

    def _faulted(self, fault: Fault) -> Outcome:
        if fault.kind is FaultKind.ERROR and fault.code:
            return Outcome(self._error(fault.code, error_for(fault.code).error_msg, new_log_id()).body, fault.kind)
        return Outcome(None, fault.kind)

    def _error(self, code: int, message: str, log_id: int) -> Outcome:
        self.stats.count_error(code)
        return Outcome(envelope(code, message, log_id))

    def _sleep(self, extra_ms: int) -> None:
        delay = self.settings.latency_ms + extra_ms
        if delay > 0:
            time.sleep(delay / 1000)

    def admin(self, method: str, what: str, values: dict[str, Any]) -> tuple[int, dict]:
        refusal = self.tokens.check(_as_text(values.get("access_token")))
        if refusal:
            return 401, {"error": "invalid_token", "error_code": refusal,
                         "error_description": f"admin endpoints need a valid access_token: {message_for(refusal)}"}
        if method == "GET" and what == "stats":
            return 200, self.stats.snapshot()
        if method == "GET" and what == "journal":
            return 200, {"entries": self.journal.entries()}
        if method == "POST" and what == "reset":
            self.stats.reset()
            self.journal.clear()
            return 200, {"reset": True}
        return 404, {"error": "not_found", "error_description": "admin: GET stats, GET journal, POST reset"}

    def close(self) -> None:
        self._workers.shutdown(wait=True, cancel_futures=True)
        self.journal.close()


def _as_text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


# ---- HTTP ---------------------------------------------------------------------------------------------


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: benchmarks measure the server, not TCP handshakes
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's delayed ACK
    # of the headers (about 40 ms on Linux), which would dwarf every answer's real cost.
    disable_nagle_algorithm = True
    server_version = "facesync"
    sys_version = ""
    server: FaceServer

    def setup(self) -> None:
        self.timeout = self.server.api.settings.idle_timeout  # applies to every read and write
        super().setup()
        self.server.api.stats.connection_opened()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.api.stats.connection_closed()

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except BodyRefused as refused:
            # What is left of the body is unread: closing is the only way not to read it as requests.
            self.close_connection = True
            self._send_json(refused.status, {"error": "bad_request", "error_description": str(refused)},
                            closing=True)
            return
        api = self.server.api
        if url.path == TOKEN_PATH:
            values = {**dict(parse_qsl(url.query)), **_form(body)}
            self._send_json(*api.token({k: v for k, v in values.items() if isinstance(v, str)}))
        elif url.path.startswith(API_PATH):
            values = {**dict(parse_qsl(url.query, keep_blank_values=True)), **self._body_params(body)}
            self._answer(api.call(url.path[len(API_PATH):].strip("/"), values))
        elif url.path.startswith("/rest/"):
            self._answer(api.call(url.path, {}))
        elif url.path.startswith(ADMIN_PREFIX):
            values = {**dict(parse_qsl(url.query)), **_form(body)}
            self._send_json(*api.admin(method, url.path[len(ADMIN_PREFIX):].strip("/"), values))
        else:
            self._send_json(404, {"error": "not_found", "error_description": "no such path"})

    def _read_body(self) -> bytes:
        encoding = self.headers.get("Transfer-Encoding")
        declared = self.headers.get("Content-Length")
        if encoding is not None:
            if encoding.strip().lower() != "chunked" or declared is not None:
                raise BodyRefused(400, "unsupported Transfer-Encoding, or both it and Content-Length")
            return self._read_chunked()
        if declared is None or declared.strip() == "":
            return b""
        if not declared.strip().isdigit():
            raise BodyRefused(400, "bad Content-Length")
        length = int(declared)
        if length > MAX_BODY_BYTES:
            raise BodyRefused(413, "request too large")
        body = self.rfile.read(length)
        if len(body) < length:
            raise BodyRefused(400, "body shorter than its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        parts, total = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            try:
                size = int(line, 16)
            except ValueError:
                raise BodyRefused(400, "bad chunk size") from None
            if size < 0:
                raise BodyRefused(400, "bad chunk size")
            if size == 0:
                while self.rfile.readline(8192).strip():  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise BodyRefused(413, "request too large")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _body_params(self, body: bytes) -> dict[str, Any]:
        if not body:
            return {}
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind == "application/json" or (kind != "application/x-www-form-urlencoded" and body.lstrip()[:1] == b"{"):
            try:
                values = json.loads(body)
            except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
                return {}
            return values if isinstance(values, dict) else {}
        return _form(body)

    def _answer(self, outcome: Outcome) -> None:
        if outcome.dropped:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        elif outcome.body is None:  # HTTP 502 fault
            self._send(502, "text/html", _BAD_GATEWAY)
        else:
            self._send_json(200, outcome.body)

    def _send_json(self, status: int, body: dict, *, closing: bool = False) -> None:
        self._send(status, "application/json;charset=utf-8", json.dumps(body, ensure_ascii=False).encode(),
                   closing=closing)

    def _send(self, status: int, content_type: str, payload: bytes, *, closing: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        if closing:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        # The default would print the request line, query string (and so the access_token) included.
        # A connection that timed out before its request line has no command or path yet.
        log.debug("%s %s: %s", getattr(self, "command", None), urlsplit(getattr(self, "path", "") or "").path,
                  format % args if args else format)


class BodyRefused(Exception):
    """A request body the server will not read: ``status`` is the HTTP answer (400 or 413)."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


def _form(body: bytes) -> dict[str, str]:
    try:
        return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


class FaceServer(ThreadingHTTPServer):
    """The HTTP server; ``port`` 0 picks a free port, ``url`` says which."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 1024  # a burst of clients waits in the kernel's queue, not in SYN retries

    def __init__(self, api: FaceApi, host: str = "127.0.0.1", port: int = 0):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.api = api
        super().__init__((host, port), _RequestHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in str(host) else host
        return f"http://{shown}:{port}"

    def server_close(self) -> None:
        super().server_close()
        self.api.close()
