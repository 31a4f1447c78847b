"""Which face library a command talks to, and opening it.

A target is ``local:PATH`` (the embedded SQLite library), ``baidu`` (https://aip.baidubce.com), or the
``http(s)://host:port`` base URL of any Baidu-compatible server (``facesync serve``, say). The first
one given wins: ``--target``, then ``FACESYNC_TARGET``, then the manifest's ``target:``, then the default.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from facesync.api.protocol import FaceLibrary
from facesync.errors import ConfigError

DEFAULT_TARGET = "local:.facesync/library.db"
BAIDU_URL = "https://aip.baidubce.com"
REMOTE_DEFAULT_QPS = 10.0

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


def choose_target(flag: str | None, manifest_target: str | None = None) -> TargetSpec:
    """The target in force, by the documented order of precedence."""
    for text in (flag, os.environ.get("FACESYNC_TARGET"), manifest_target):
        if text:
            return parse_target(text)
    log.warning("no target given: using the embedded local library %s", DEFAULT_TARGET)
    return parse_target(DEFAULT_TARGET)


def open_target(spec: TargetSpec, *, qps: float | None = None, concurrency: int = 8) -> FaceLibrary:
    """The FaceLibrary for ``spec``. Remote targets read credentials from the environment."""
    if spec.is_local:
        from facesync.local.store import LocalLibrary
        from facesync.local.unknowns import unknowns_from_environment

        return LocalLibrary(spec.location, unknowns=unknowns_from_environment())
    from facesync.api.baidu import BaiduClient

    return BaiduClient.from_environment(
        spec.location, qps=REMOTE_DEFAULT_QPS if qps is None else qps, concurrency=concurrency
    )
