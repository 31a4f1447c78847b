"""Logging for people (plain lines) and for log shippers (one JSON object a line), with secrets removed.

Every secret facesync learns (API key, secret key, access token) is registered here; every log record
and every error message printed by the CLI passes through ``redact`` first, so a secret can leak only
through code that bypasses both, which is why the HTTP client also scrubs its own exceptions.
"""

from __future__ import annotations

import json
import logging
import sys
import threading

from facesync.clock import utc_text

_secrets: set[str] = set()
_lock = threading.Lock()
MASK = "***"


def register_secret(value: str | None) -> None:
    """Never show ``value`` again in any log line or error message."""
    if value and len(value) >= 4:  # shorter strings would mask ordinary words
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


class _RedactingFormatter(logging.Formatter):
    def __init__(self, as_json: bool):
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        if not self.as_json:  # people read "warning: ...": logger names only help when debugging
            labelled = record.levelno == logging.INFO or getattr(record, "labelled", False)
            prefix = "" if labelled else f"{record.levelname.lower()}: "
            if record.levelno <= logging.DEBUG:
                prefix += f"{record.name}: "
            text = prefix + record.getMessage()
            if record.exc_info:
                text += "\n" + self.formatException(record.exc_info)
            return redact(text)
        entry = {
            "time": utc_text(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))  # structured extras: logger.info(..., extra={"fields": {...}})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, ensure_ascii=False, default=str))


def configure(verbosity: int = 0, log_format: str = "text") -> None:
    """verbosity: -1 quiet (errors only), 0 warnings and notices, 1 info, 2 debug."""
    level = {-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_RedactingFormatter(log_format == "json"))
    root = logging.getLogger("facesync")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
