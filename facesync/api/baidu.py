"""``BaiduClient``: the face library over Baidu's HTTP wire protocol (real Baidu, or any compatible server).

Everything that goes wrong between facesync and the server ends here as one of the kinds of
``api/errors.py``, with its ``log_id`` when the server gave one:

- access token: fetched once (under a lock, however many threads need it), reused until 90 % of its
  lifetime (or one day before it ends, whichever comes first) has passed; an answer 100/110/111 renews it
  once and repeats the call. Wrong credentials are a ``ConfigError`` naming the setting to fix
  (``BAIDU_API_KEY`` for "unknown client id", ``BAIDU_SECRET_KEY`` for "Client authentication failed").
- ``BAIDU_APP_ID``, when set, must equal the app id the token was issued for (its "-<app id>" suffix);
  otherwise the client refuses to touch the library. ``identity`` names that app id.
- answers: the JSON envelope becomes the typed results of ``protocol.py``; a non-zero ``error_code``
  becomes ``error_for(code, msg, log_id)``. No usable answer (timeout, reset or refused connection,
  HTTP 5xx, a body that is not JSON or not an envelope) is a ``TransportError``. HTTP 429 counts as
  error 18. Another HTTP 4xx without an envelope is final: the base URL is most likely not a Baidu API.
- rate: every attempt (and every token request) waits for a slot of one shared ``RateLimiter``; the
  retry policy is ``retry.RetryPolicy`` (see there for what is retried and why). Transport failures
  are retried for ``transport_budget`` seconds (a server restarting is waited out), except when
  fetching the first token: a wrong URL fails after ``max_attempts``. A read timeout is an
  ``AnswerLostError``; a call that is not safe to repeat (user/update) is then not re-sent.
- secrets: the API key, secret key and every access token are registered with ``logs.register_secret``;
  exception texts from ``requests`` (which carry the URL and its query string) are scrubbed before they
  are wrapped, and urllib3's own debug lines are scrubbed by a logging filter. ``repr`` shows none.
- connections: one ``requests.Session`` with a pool of ``concurrency`` connections, at most
  ``concurrency`` calls in flight, (connect, read) timeouts, TLS verification always on, proxies and CA
  bundle from the environment as ``requests`` reads them.
- ``observers`` (``FaceLibrary``'s) see one ``CallRecord`` per HTTP attempt at an API endpoint (token
  requests excluded, they have no log_id), from the calling thread: ``error_code`` 0 for success, the
  Baidu code on an error answer, None when no usable answer came. ``on_call=`` adds one at construction.
- ``identity`` never fetches a token: ``connect()`` does (``open_target`` calls it), and from then on
  ``identity`` names the app the token was issued for.
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from facesync import logs
from facesync.api.errors import (
    AnswerLostError,
    AuthError,
    FaceApiError,
    QpsLimitError,
    TokenError,
    TransportError,
    error_for,
)
from facesync.api.protocol import (
    API_PATH,
    NO_CONTROL,
    PAGE_DEFAULT,
    TOKEN_PATH,
    Ack,
    AddedFace,
    CallObserver,
    CallRecord,
    DetectedFace,
    Detection,
    Endpoint,
    FaceEntry,
    FaceList,
    IdPage,
    Image,
    LibraryBase,
    Location,
    UserMembership,
    UserRecord,
)
from facesync.api.ratelimit import RateLimiter
from facesync.api.retry import RetryPolicy, is_retryable
from facesync.errors import ConfigError

log = logging.getLogger("facesync.api")

TOKEN_ENDPOINT = TOKEN_PATH.lstrip("/")  # how messages name the token call
DAY = 86400.0
DEFAULT_TOKEN_LIFETIME = 30 * DAY  # Baidu's, when an answer leaves expires_in out

_QUERY_SECRET = re.compile(r"((?:access_token|client_id|client_secret)=)[^&\s'\"<>)]+")


def scrub(text: str) -> str:
    """``text`` without any credential: registered secrets and credential query parameters masked."""
    return logs.redact(_QUERY_SECRET.sub(r"\1" + logs.MASK, text))


def _root_cause(error: requests.RequestException) -> str:
    """The innermost cause in a few words ("[Errno 111] Connection refused"), not urllib3's retelling
    of the whole request (which names the URL, query string included)."""
    cause: BaseException = error
    seen = set()
    while cause.__context__ is not None and id(cause) not in seen:
        seen.add(id(cause))
        cause = cause.__context__
    text = scrub(str(cause))
    found = _ERRNO.search(text)
    if found:
        return found.group(0)
    return f"{type(cause).__name__}: {text[:200]}"


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")(]+")


class _ScrubFilter(logging.Filter):
    """urllib3 logs every request line, query string (and so the access token) included, at DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_SCRUBBED_LOGGERS = ("urllib3.connectionpool", "urllib3.connection", "urllib3.poolmanager",
                     "urllib3.util.retry", "requests")
_scrub_installed = False
_scrub_lock = threading.Lock()


def _scrub_library_logs() -> None:
    global _scrub_installed
    with _scrub_lock:
        if not _scrub_installed:
            for name in _SCRUBBED_LOGGERS:
                logging.getLogger(name).addFilter(_ScrubFilter())
            _scrub_installed = True


_call_observers: list[CallObserver] = []  # process-wide, beside each client's own observers


def add_call_observer(observer: CallObserver) -> Callable[[], None]:
    """Report every client's calls to ``observer`` as well (``--metrics-file``); returns what removes it."""
    _call_observers.append(observer)
    return lambda: _call_observers.remove(observer)


@dataclass(frozen=True)
class _Token:
    value: str
    app_id: str | None
    renew_at: float  # monotonic clock

    def __repr__(self) -> str:
        return f"_Token(app_id={self.app_id!r})"


def unreachable_hint(base_url: str) -> str:
    from facesync.targets import BAIDU_URL

    if base_url.startswith(BAIDU_URL):  # the only server a manifest's target: may name (as baidu)
        hint = f"check the URL {base_url} (--target, FACESYNC_TARGET or the manifest's target: baidu)"
    else:
        hint = f"check the URL {base_url} (--target or FACESYNC_TARGET); for a local server, start it with " \
               "`facesync serve`"
    return hint + "; behind a proxy, check HTTPS_PROXY, HTTP_PROXY and NO_PROXY"


def missing_key_hint(name: str, base_url: str) -> str:
    """Where the key comes from: Baidu's console for Baidu, serve's own keys for any other server."""
    from facesync.targets import BAIDU_URL

    if base_url.startswith(BAIDU_URL):
        return f"export {name}=... (from the Baidu AI console, application list) to use {base_url}"
    from facesync.commands.serve import DEFAULT_API_KEY, DEFAULT_SECRET_KEY

    return (f"for `facesync serve` at {base_url}: export BAIDU_API_KEY={DEFAULT_API_KEY} "
            f"BAIDU_SECRET_KEY={DEFAULT_SECRET_KEY} (its defaults, unless it was started with --api-key / "
            "--secret-key); for Baidu itself, the app's keys from the Baidu AI console")


def renewal_delay(expires_in: float) -> float:
    """Seconds after issue at which a token of lifetime ``expires_in`` is renewed."""
    early = 0.9 * expires_in
    if expires_in > 2 * DAY:
        return min(early, expires_in - DAY)
    return early


def app_id_of(access_token: str) -> str | None:
    """The app id Baidu appends to its access tokens: "24.<hex>.<ttl>.<time>.<n>-<app id>"."""
    head, sep, tail = access_token.rpartition("-")
    return tail if sep and head and tail.isdigit() else None


class BaiduClient(LibraryBase):
    """The face library of one Baidu app, over HTTP. Thread-safe: share one client between threads."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        secret_key: str,
        *,
        app_id: str | None = None,
        qps: float | None = 10.0,
        concurrency: int = 8,
        connect_timeout: float = 5,
        read_timeout: float = 30,
        max_attempts: int = 6,
        max_elapsed: float = 120,
        transport_budget: float = 60,
        session: requests.Session | None = None,
        on_call: CallObserver | None = None,
    ):
        super().__init__()
        logs.register_secret(api_key)
        logs.register_secret(secret_key)
        _scrub_library_logs()
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base URL must start with http:// or https://, not {scrub(base_url)!r}")
        if not api_key:
            raise ConfigError("the API key is empty", hint="set BAIDU_API_KEY")
        if not secret_key:
            raise ConfigError("the secret key is empty", hint="set BAIDU_SECRET_KEY")
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self._secret_key = secret_key
        self._expected_app_id = app_id or None
        self.qps = qps
        self.concurrency = concurrency
        self.timeout = (connect_timeout, read_timeout)
        self.policy = RetryPolicy(max_attempts=max_attempts, max_elapsed=max_elapsed, transport_budget=transport_budget)
        # the first contact fails fast on a wrong URL; once a token is held, a restart is waited out
        self.token_policy = RetryPolicy(max_attempts=max_attempts, max_elapsed=max_elapsed, transport_budget=0)
        self.limiter = RateLimiter(qps)
        if on_call is not None:
            self.observers.append(on_call)
        self._session = session or self._new_session(concurrency)
        self._in_flight = threading.BoundedSemaphore(concurrency)
        self._token: _Token | None = None
        self._token_lock = threading.Lock()
        self._rng = random.Random()
        self._clock = time.monotonic
        self._sleep = time.sleep

    @classmethod
    def from_environment(cls, base_url: str, *, qps: float | None = 10.0, concurrency: int = 8,
                         **options: Any) -> BaiduClient:
        """A client with credentials from BAIDU_API_KEY, BAIDU_SECRET_KEY and (optional) BAIDU_APP_ID."""
        values = {}
        for name in ("BAIDU_API_KEY", "BAIDU_SECRET_KEY"):
            values[name] = os.environ.get(name, "").strip()
            if not values[name]:
                raise ConfigError(f"{name} is not set", hint=missing_key_hint(name, base_url))
        return cls(base_url, values["BAIDU_API_KEY"], values["BAIDU_SECRET_KEY"],
                   app_id=os.environ.get("BAIDU_APP_ID", "").strip() or None,
                   qps=qps, concurrency=concurrency, **options)

    @staticmethod
    def _new_session(concurrency: int) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=concurrency, max_retries=0)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        session.verify = True
        return session

    def __repr__(self) -> str:
        return f"BaiduClient({self.base_url!r}, app_id={self._app_id_shown()!r}, qps={self.qps})"

    def close(self) -> None:
        self._session.close()

    # -- identity and tokens -------------------------------------------------------------------------

    @property
    def identity(self) -> str:
        """"<base URL> app <app id>": the app id of the access token once one is held (``connect``), else
        BAIDU_APP_ID's, else "unknown". Makes no call."""
        return f"{self.base_url} app {self._app_id_shown()}"

    def connect(self) -> None:
        """Fetch the access token now (and check it is for BAIDU_APP_ID's app), so that ``identity``
        names the app and a wrong URL or key is an error before anything else is done."""
        self._current_token()

    def _app_id_shown(self) -> str:
        token = self._token
        return (token.app_id if token else None) or self._expected_app_id or "unknown"

    def _current_token(self) -> _Token:
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token
        with self._token_lock:  # one fetch however many threads arrive here together
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = self._token = self._fetch_token()
            return token

    def _discard_token(self, token: _Token) -> None:
        """Forget ``token`` unless another thread has already replaced it."""
        with self._token_lock:
            if self._token is token:
                self._token = None

    def _fetch_token(self) -> _Token:
        started = self._clock()
        attempt = failures = 0
        while True:
            attempt += 1
            try:
                return self._request_token()
            except TransportError as error:
                failures += 1
                delay = self.token_policy.next_delay(error, failures=failures, retry=attempt,
                                                     elapsed=self._clock() - started, rng=self._rng)
                if delay is None:  # retries are details (-v): the error that follows says what happened
                    log.info("access token: giving up after %d attempts: %s", attempt, error.error_msg)
                    raise
                log.info("access token: %s; retry %d in %.2f s", error.error_msg, attempt, delay)
                self._sleep(delay)

    def _request_token(self) -> _Token:
        self.limiter.acquire()
        query = {"grant_type": "client_credentials", "client_id": self._api_key,
                 "client_secret": self._secret_key}
        began = self._clock()
        response = self._post(TOKEN_PATH, TOKEN_ENDPOINT, query, None)
        body = _json_of(response)
        issued = self._clock()
        if isinstance(body, dict) and body.get("error"):
            raise self._token_refused(body)
        if 400 <= response.status_code < 500 and not isinstance(body, dict):
            raise ConfigError(
                f"HTTP {response.status_code} from {TOKEN_ENDPOINT} without an OAuth answer",
                hint=f"is {self.base_url} a Baidu API? check the target",
            )
        if response.status_code >= 400 or not isinstance(body, dict):
            raise _no_answer(TOKEN_ENDPOINT, response)
        value = body.get("access_token")
        if not isinstance(value, str) or not value:
            raise _no_answer(TOKEN_ENDPOINT, response, "no access_token in the answer")
        logs.register_secret(value)
        try:
            lifetime = float(body.get("expires_in", DEFAULT_TOKEN_LIFETIME))
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        scope = body.get("scope")
        if isinstance(scope, str) and "brain_all_scope" not in scope.split():
            log.warning("the access token's scope lacks brain_all_scope: the face API may refuse it (error 6)")
        token = _Token(value, app_id_of(value), began + renewal_delay(lifetime))
        self._check_app(token)
        log.debug("access token: new, valid %.0f s, renewed after %.0f s (%.3f s)",
                  lifetime, renewal_delay(lifetime), issued - began)
        return token

    def _token_refused(self, body: dict) -> FaceApiError | ConfigError:
        error = str(body.get("error"))
        description = scrub(str(body.get("error_description", "")))
        if error == "invalid_client" and "unknown client id" in description.lower():
            return ConfigError(
                f"{self.base_url} does not know the API key in BAIDU_API_KEY ({description})",
                hint="set BAIDU_API_KEY to the API Key of the app in the Baidu AI console",
            )
        if error == "invalid_client" and "authentication failed" in description.lower():
            return ConfigError(
                f"{self.base_url} refused the secret key in BAIDU_SECRET_KEY ({description})",
                hint="set BAIDU_SECRET_KEY to the Secret Key of the same app as BAIDU_API_KEY",
            )
        if error == "invalid_client":
            return ConfigError(
                f"{self.base_url} refused the credentials ({error}: {description})",
                hint="check BAIDU_API_KEY and BAIDU_SECRET_KEY",
            )
        return AuthError(13, f"Get service token failed: {scrub(error)}: {description}",
                         hint="check BAIDU_API_KEY and BAIDU_SECRET_KEY")

    def _check_app(self, token: _Token) -> None:
        expected = self._expected_app_id
        if expected is None or token.app_id == expected:
            return
        if token.app_id is None:
            raise ConfigError(
                f"BAIDU_APP_ID is {expected}, but {self.base_url} issued a token that names no app id",
                hint="unset BAIDU_APP_ID to use this server without the check",
            )
        raise ConfigError(
            f"BAIDU_APP_ID is {expected}, but the credentials belong to app {token.app_id} at {self.base_url}; "
            "refusing to touch another app's face library",
            hint=f"use the API key and secret key of app {expected}, or correct BAIDU_APP_ID",
        )

    # -- calls ---------------------------------------------------------------------------------------

    def _call(self, endpoint: str, params: dict[str, Any]) -> tuple[Any, int]:
        """(result, log_id) of a successful call, after renewals and retries."""
        started = self._clock()
        attempt = failures = 0
        renewed = False
        while True:
            attempt += 1
            token = self._current_token()
            with self._in_flight:
                self.limiter.acquire()
                began = self._clock()
                try:
                    envelope = self._envelope(endpoint, token.value, params)
                except FaceApiError as caught:
                    error = caught
                else:
                    error = None
            duration = self._clock() - began
            if error is None:
                self.limiter.accepted()
                log_id = _log_id(envelope)
                self._report(endpoint, 0, log_id, duration, attempt)
                log.debug("%s: ok, log_id %s, %.3f s, attempt %d", endpoint, log_id, duration, attempt)
                return envelope.get("result"), log_id
            code = None if isinstance(error, TransportError) else error.error_code
            self._report(endpoint, code, error.log_id, duration, attempt)
            log.debug("%s: %s, %.3f s, attempt %d", endpoint, _outcome(error), duration, attempt)
            if isinstance(error, QpsLimitError):
                self.limiter.throttled()
            else:
                if not isinstance(error, TransportError):
                    self.limiter.accepted()
                failures += 1
            if isinstance(error, TokenError) and not renewed:
                renewed = True
                self._discard_token(token)
                log.info("%s: access token refused (error %d): renewing it once", endpoint, error.error_code)
                continue
            if not is_retryable(error, endpoint):  # e.g. a user/update that may still land: never re-sent
                raise error
            delay = self.policy.next_delay(error, failures=failures, retry=attempt,
                                           elapsed=self._clock() - started, rng=self._rng)
            if delay is None:
                if is_retryable(error):
                    log.info("%s: giving up after %d attempts in %.1f s: %s",
                                endpoint, attempt, self._clock() - started, _outcome(error))
                raise error
            log.info("%s: %s; retry %d in %.2f s", endpoint, _outcome(error), attempt, delay)
            self._sleep(delay)

    def _report(self, endpoint: str, code: int | None, log_id: int | None, duration: float, attempt: int) -> None:
        self._notify(CallRecord(endpoint, code, log_id, duration, attempt), *_call_observers)

    def _envelope(self, endpoint: str, access_token: str, params: dict[str, Any]) -> dict:
        response = self._post(API_PATH + endpoint, endpoint, {"access_token": access_token}, params)
        body = _json_of(response)
        if isinstance(body, dict) and "error_code" in body:
            try:
                code = int(body["error_code"])
            except (TypeError, ValueError):
                raise _no_answer(endpoint, response, "error_code is not a number") from None
            if code != 0:
                raise error_for(code, scrub(str(body.get("error_msg") or "")) or None, _log_id(body))
            if response.status_code == 200:
                return body
        if response.status_code == 429:
            raise QpsLimitError(18, "HTTP 429 Too Many Requests", None)
        if 400 <= response.status_code < 500:
            raise FaceApiError(
                0, f"HTTP {response.status_code} from {endpoint} without a Baidu answer",
                hint=f"is {self.base_url} a Baidu Face V3 API? check the target",
            )
        raise _no_answer(endpoint, response)

    def _post(self, path: str, endpoint: str, query: dict[str, str], body: dict | None) -> requests.Response:
        failure = None
        kind = TransportError
        try:
            return self._session.post(self.base_url + path, params=query, json=body, timeout=self.timeout,
                                      verify=True)
        except requests.ReadTimeout as error:  # sent, accepted, unanswered: it may still be carried out
            failure = f"{endpoint} at {self.base_url}: no answer in time ({_root_cause(error)})"
            kind = AnswerLostError
        except requests.Timeout as error:
            failure = f"{endpoint} at {self.base_url}: no answer in time ({_root_cause(error)})"
        except requests.RequestException as error:
            failure = f"{endpoint} at {self.base_url}: connection failed ({_root_cause(error)})"
        unreachable = kind(failure)  # raised outside the except: the original, unscrubbed, is not chained
        unreachable.hint = unreachable_hint(self.base_url)
        raise unreachable

    # -- the FaceLibrary interface -------------------------------------------------------------------

    def user_add(self, group_id: str, user_id: str, image: Image, *, user_info: str | None = None,
                 quality_control: str = NO_CONTROL, liveness_control: str = NO_CONTROL) -> AddedFace:
        return self._added(Endpoint.USER_ADD, group_id, user_id, image, user_info, quality_control,
                           liveness_control)

    def user_update(self, group_id: str, user_id: str, image: Image, *, user_info: str | None = None,
                    quality_control: str = NO_CONTROL, liveness_control: str = NO_CONTROL) -> AddedFace:
        return self._added(Endpoint.USER_UPDATE, group_id, user_id, image, user_info, quality_control,
                           liveness_control)

    def _added(self, endpoint: str, group_id: str, user_id: str, image: Image, user_info: str | None,
               quality_control: str, liveness_control: str) -> AddedFace:
        params = {"image": image.value, "image_type": image.type.value, "group_id": group_id,
                  "user_id": user_id, "quality_control": quality_control, "liveness_control": liveness_control}
        if user_info is not None:
            params["user_info"] = user_info
        result, log_id = self._call(endpoint, params)
        return _parsed(endpoint, lambda: AddedFace(str(result["face_token"]), _location(result["location"]),
                                                   log_id))

    def face_delete(self, group_id: str, user_id: str, face_token: str) -> Ack:
        return self._ack(Endpoint.FACE_DELETE, {"group_id": group_id, "user_id": user_id,
                                                 "face_token": face_token})

    def user_get(self, group_id: str, user_id: str) -> UserRecord:
        result, log_id = self._call(Endpoint.USER_GET, {"group_id": group_id, "user_id": user_id})
        return _parsed(Endpoint.USER_GET, lambda: UserRecord(
            tuple(UserMembership(str(entry["group_id"]), str(entry.get("user_info") or ""))
                  for entry in result["user_list"]), log_id))

    def face_getlist(self, group_id: str, user_id: str) -> FaceList:
        result, log_id = self._call(Endpoint.FACE_GETLIST, {"group_id": group_id, "user_id": user_id})
        return _parsed(Endpoint.FACE_GETLIST, lambda: FaceList(
            tuple(FaceEntry(str(entry["face_token"]), str(entry.get("ctime", "")))
                  for entry in result["face_list"]), log_id))

    def group_getusers(self, group_id: str, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage:
        return self._page(Endpoint.GROUP_GETUSERS, "user_id_list",
                          {"group_id": group_id, "start": start, "length": length})

    def user_copy(self, user_id: str, src_group_id: str, dst_group_id: str) -> Ack:
        return self._ack(Endpoint.USER_COPY, {"user_id": user_id, "src_group_id": src_group_id,
                                               "dst_group_id": dst_group_id})

    def user_delete(self, group_id: str, user_id: str) -> Ack:
        return self._ack(Endpoint.USER_DELETE, {"group_id": group_id, "user_id": user_id})

    def group_add(self, group_id: str) -> Ack:
        return self._ack(Endpoint.GROUP_ADD, {"group_id": group_id})

    def group_delete(self, group_id: str) -> Ack:
        return self._ack(Endpoint.GROUP_DELETE, {"group_id": group_id})

    def group_getlist(self, start: int = 0, length: int = PAGE_DEFAULT) -> IdPage:
        return self._page(Endpoint.GROUP_GETLIST, "group_id_list", {"start": start, "length": length})

    def detect(self, image: Image) -> Detection:
        result, log_id = self._call(Endpoint.DETECT, {"image": image.value, "image_type": image.type.value})
        return _parsed(Endpoint.DETECT, lambda: Detection(
            tuple(DetectedFace(str(face["face_token"]), _location(face["location"]),
                               float(face.get("face_probability", 1.0)))
                  for face in (result or {}).get("face_list") or ()), log_id))

    def _ack(self, endpoint: str, params: dict[str, Any]) -> Ack:
        _, log_id = self._call(endpoint, params)
        return Ack(log_id)

    def _page(self, endpoint: str, key: str, params: dict[str, Any]) -> IdPage:
        result, log_id = self._call(endpoint, params)
        return _parsed(endpoint, lambda: IdPage(tuple(str(i) for i in (result or {}).get(key) or ()), log_id))


def _outcome(error: FaceApiError) -> str:
    """How an attempt ended, for log lines: the code and log_id of an answer, or why there was none."""
    if isinstance(error, TransportError):
        return error.error_msg.split(": ", 1)[-1]
    return f"error {error.error_code} {error.error_msg}, log_id {error.log_id}"


def _json_of(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _log_id(body: dict) -> int | None:
    try:
        return int(body["log_id"])
    except (KeyError, TypeError, ValueError):
        return None


def _no_answer(endpoint: str, response: requests.Response, why: str | None = None) -> TransportError:
    kind = response.headers.get("Content-Type", "no content type").split(";")[0]
    reason = why or f"HTTP {response.status_code}, {kind} instead of a Baidu answer"
    return TransportError(f"{endpoint}: {reason}")


def _location(raw: dict) -> Location:
    return Location(float(raw["left"]), float(raw["top"]), float(raw["width"]), float(raw["height"]),
                    int(raw.get("rotation", 0)))


def _parsed(endpoint: str, build: Callable[[], Any]) -> Any:
    """A successful answer whose result lacks what the contract promises is no usable answer."""
    try:
        return build()
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        problem = f"{endpoint}: malformed result ({type(error).__name__}: {scrub(str(error))})"
    raise TransportError(problem)
