"""Faults that ``facesync serve`` injects on purpose, so retries, back-off and idempotence can be tested.

A faults file (YAML; see examples/faults.example.yaml) names a random ``seed``, a list of ``faults``
that hit a share (``rate``) of API calls, optionally only on some ``endpoints``, and a list of
``reject_images`` whose face_tokens are always refused with a quality or liveness code.

Choices where nothing else decides:
- One random draw per call picks at most one fault: the rates of the faults that apply to an endpoint
  are exclusive shares of its calls, so they must add up to 1 or less for every endpoint.
- Every fault is decided before the call runs, so a faulted call changes nothing. The one exception is
  ``drop_after_commit``: the call runs, then its answer is lost, as when a connection breaks after
  Baidu has written; that is how a client's idempotent re-run is tested.
- With a seed, the sequence of decisions is repeatable; which call meets which decision still depends on
  the order calls arrive in, so concurrent clients see the same rates, not the same calls.
- Unknown keys are refused, so a misspelt ``rates:`` cannot silently inject nothing.
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import yaml

from facesync.api.errors import ERROR_CODES
from facesync.api.protocol import ENDPOINTS, NO_CONTROL
from facesync.errors import ConfigError

ImageCheck = Callable[[str, str, str], "int | None"]


class FaultKind(str, Enum):
    ERROR = "error"  # an envelope with one of ``codes``
    HTTP_502 = "http_502"  # a gateway's HTML error page
    DROP = "drop"  # the connection is closed without an answer; nothing ran
    SLOW = "slow"  # the answer comes ``delay_ms`` later than usual
    DROP_AFTER_COMMIT = "drop_after_commit"  # the call runs, then the connection is closed


class RejectWhen(str, Enum):
    ALWAYS = "always"
    QUALITY_CONTROL = "quality_control"  # only when the call asks for quality control (not NONE)
    LIVENESS_CONTROL = "liveness_control"  # only when the call asks for liveness control (not NONE)


@dataclass(frozen=True, slots=True)
class FaultRule:
    kind: FaultKind
    rate: float
    endpoints: frozenset[str]
    codes: tuple[int, ...] = ()
    delay_ms: int = 0


@dataclass(frozen=True, slots=True)
class ImageRejection:
    face_tokens: frozenset[str]
    code: int
    when: RejectWhen = RejectWhen.ALWAYS


@dataclass(frozen=True, slots=True)
class FaultConfig:
    seed: int | None = None
    rules: tuple[FaultRule, ...] = ()
    rejections: tuple[ImageRejection, ...] = ()


@dataclass(frozen=True, slots=True)
class Fault:
    """What happens to one call."""

    kind: FaultKind
    code: int | None = None
    delay_ms: int = 0


def load_faults(path: str | Path) -> FaultConfig:
    """Read and check a faults file; every problem is a ``ConfigError`` naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read faults file {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"faults file {path} is not valid YAML: {error}") from None
    return parse_faults(data, source=str(path), base=path.parent)


def parse_faults(data: object, *, source: str = "faults", base: Path | None = None) -> FaultConfig:
    """The checked form of a parsed faults document; ``base`` anchors relative image paths."""
    if data is None:
        return FaultConfig()
    top = _mapping(data, source, {"seed", "faults", "reject_images"})
    seed = top.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise ConfigError(f"{source}: seed must be an integer")
    rules = tuple(_rule(item, f"{source}: faults[{i}]") for i, item in enumerate(_list(top, "faults", source)))
    _check_shares(rules, source)
    rejections = tuple(_rejection(item, f"{source}: reject_images[{i}]", base or Path("."))
                       for i, item in enumerate(_list(top, "reject_images", source)))
    return FaultConfig(seed, rules, rejections)


def _mapping(value: object, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping")
    unknown = sorted(str(key) for key in value if key not in allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")
    return value


def _list(top: dict, key: str, source: str) -> list:
    value = top.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{source}: {key} must be a list")
    return value


def _rule(item: object, where: str) -> FaultRule:
    fields = _mapping(item, where, {"kind", "rate", "endpoints", "codes", "delay_ms"})
    try:
        kind = FaultKind(fields.get("kind"))
    except ValueError:
        raise ConfigError(f"{where}: kind must be one of {', '.join(k.value for k in FaultKind)}") from None
    rate = fields.get("rate")
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate <= 1:
        raise ConfigError(f"{where}: rate must be a number from 0 to 1")
    codes: tuple[int, ...] = ()
    if kind is FaultKind.ERROR:
        raw = fields.get("codes")
        if not isinstance(raw, list) or not raw or not all(_is_error_code(code) for code in raw):
            raise ConfigError(f"{where}: an error fault needs codes, a list of non-zero error codes")
        codes = tuple(raw)
    elif "codes" in fields:
        raise ConfigError(f"{where}: codes only apply to kind error")
    delay_ms = fields.get("delay_ms", 0)
    if kind is FaultKind.SLOW:
        if not isinstance(delay_ms, int) or isinstance(delay_ms, bool) or delay_ms <= 0:
            raise ConfigError(f"{where}: a slow fault needs delay_ms, a positive integer")
    elif "delay_ms" in fields:
        raise ConfigError(f"{where}: delay_ms only applies to kind slow")
    return FaultRule(kind, float(rate), _endpoints(fields.get("endpoints"), where), codes, delay_ms)


def _is_error_code(code: object) -> bool:
    return isinstance(code, int) and not isinstance(code, bool) and code > 0


def _endpoints(raw: object, where: str) -> frozenset[str]:
    if raw is None:
        return frozenset(ENDPOINTS)
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: endpoints must be a non-empty list")
    unknown = [name for name in raw if name not in ENDPOINTS]
    if unknown:
        raise ConfigError(f"{where}: unknown endpoint {', '.join(map(str, unknown))} "
                          f"(known: {', '.join(ENDPOINTS)})")
    return frozenset(raw)


def _check_shares(rules: tuple[FaultRule, ...], source: str) -> None:
    for endpoint in ENDPOINTS:
        total = sum(rule.rate for rule in rules if endpoint in rule.endpoints)
        if total > 1 + 1e-9:
            raise ConfigError(f"{source}: the fault rates on {endpoint} add up to {total:g}, more than 1")


def _rejection(item: object, where: str, base: Path) -> ImageRejection:
    fields = _mapping(item, where, {"face_token", "face_tokens", "images", "code", "when"})
    tokens: set[str] = set()
    if "face_token" in fields:
        tokens.add(_face_token(fields["face_token"], where))
    raw_tokens = fields.get("face_tokens", [])
    if not isinstance(raw_tokens, list):
        raise ConfigError(f"{where}: face_tokens must be a list")
    tokens.update(_face_token(token, where) for token in raw_tokens)
    raw_images = fields.get("images", [])
    if not isinstance(raw_images, list):
        raise ConfigError(f"{where}: images must be a list of file paths")
    tokens.update(_image_token(base / str(image), where) for image in raw_images)
    if not tokens:
        raise ConfigError(f"{where}: name the images to reject with face_token, face_tokens or images")
    code = fields.get("code")
    if not _is_error_code(code) or code not in ERROR_CODES:
        raise ConfigError(f"{where}: code must be a known error code such as 223120 or 223113")
    try:
        when = RejectWhen(fields.get("when", RejectWhen.ALWAYS.value))
    except ValueError:
        raise ConfigError(f"{where}: when must be one of {', '.join(w.value for w in RejectWhen)}") from None
    return ImageRejection(frozenset(tokens), code, when)


def _face_token(value: object, where: str) -> str:
    token = str(value).lower()
    if len(token) != 32 or any(c not in "0123456789abcdef" for c in token):
        raise ConfigError(f"{where}: {value!r} is not a face_token (32 hex characters)")
    return token


def _image_token(path: Path, where: str) -> str:
    try:
        return hashlib.md5(path.read_bytes()).hexdigest()  # the local library's face_token
    except OSError as error:
        raise ConfigError(f"{where}: cannot read image {path}: {error.strerror or error}") from None


class FaultInjector:
    """Decides, call by call, which fault (if any) hits it; safe to share between threads."""

    def __init__(self, config: FaultConfig):
        self.config = config
        self._random = random.Random(config.seed)
        self._lock = threading.Lock()
        self._rules = {endpoint: tuple(rule for rule in config.rules if endpoint in rule.endpoints and rule.rate)
                       for endpoint in ENDPOINTS}

    def decide(self, endpoint: str) -> Fault | None:
        rules = self._rules.get(endpoint, ())
        if not rules:
            return None
        with self._lock:
            draw = self._random.random()
            for rule in rules:
                if draw < rule.rate:
                    code = self._random.choice(rule.codes) if rule.codes else None
                    return Fault(rule.kind, code, rule.delay_ms)
                draw -= rule.rate
        return None


def image_check_for(config: FaultConfig) -> ImageCheck | None:
    """The hook LocalLibrary calls for each image: the code to refuse it with, or None to accept it."""
    if not config.rejections:
        return None
    rejections = config.rejections

    def check(face_token: str, quality_control: str, liveness_control: str) -> int | None:
        for rejection in rejections:
            if face_token in rejection.face_tokens and _applies(rejection.when, quality_control, liveness_control):
                return rejection.code
        return None

    return check


def _applies(when: RejectWhen, quality_control: str, liveness_control: str) -> bool:
    if when is RejectWhen.QUALITY_CONTROL:
        return (quality_control or NO_CONTROL).upper() != NO_CONTROL
    if when is RejectWhen.LIVENESS_CONTROL:
        return (liveness_control or NO_CONTROL).upper() != NO_CONTROL
    return True
