"""One problem found in a manifest, and how problems are shown to people and to machines.

Every check produces ``Diagnostic`` records instead of raising, so that ``validate`` reports every
problem of a manifest in one run, each with the file, line and column a person jumps to in an editor.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from facesync.model import Origin

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Diagnostic:
    """``path`` is the key path inside the manifest, e.g. ``groups.staff.users.alice.images[1]``."""

    severity: str
    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None

    @property
    def location(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR

    def headline(self) -> str:
        at = f" (at {self.path})" if self.path else ""
        return f"{self.location}: {self.severity}: {self.message}{at}"

    def __str__(self) -> str:
        return self.headline() + (f"\n  hint: {self.hint}" if self.hint else "")

    def to_json(self) -> dict:
        return asdict(self)


def error(origin: Origin, path: str, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(ERROR, origin.file, origin.line, origin.column, path, message, hint)


def warning(origin: Origin, path: str, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(WARNING, origin.file, origin.line, origin.column, path, message, hint)


def sort_key(diagnostic: Diagnostic) -> tuple:
    return (diagnostic.file, diagnostic.line, diagnostic.column, not diagnostic.is_error, diagnostic.message)


def render_diagnostics(diagnostics: Iterable[Diagnostic], fmt: str = "text") -> str:
    """``text``: one block per diagnostic as an editor's problem list reads; ``json``: a JSON array."""
    items = sorted(diagnostics, key=sort_key)
    if fmt == "json":
        return json.dumps([d.to_json() for d in items], indent=2, ensure_ascii=False)
    if fmt != "text":
        raise ValueError(f"unknown diagnostics format {fmt!r}")
    return "\n".join(str(d) for d in items)
