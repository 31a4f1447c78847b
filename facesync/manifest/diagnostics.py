"""One problem found in a manifest, and how problems are shown to people and to machines.

Every check produces ``Diagnostic`` records instead of raising, so that ``validate`` reports every
problem of a manifest in one run, each with the file, line and column a person jumps to in an editor.

A large manifest can break one rule thousands of times (300,000 users with too long ids): the text
form shows the first ``SHOWN_PER_KIND`` of each kind in full and then one line "... and N more of this
kind"; a kind is a severity and a message with its names, paths and numbers left out. The JSON form,
and the text form with ``per_kind=None`` (``facesync -v validate``), list every one.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from facesync.model import Origin

ERROR = "error"
WARNING = "warning"
SHOWN_PER_KIND = 10
# What varies between diagnostics of one kind: quoted text, paths and names with dots, numbers.
_RUNS = re.compile("…+")
_PARTICULARS = re.compile(r"'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\"|[^\s'\"]*[./][^\s'\"]*|\d[\d,]*")


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

    @property
    def kind(self) -> str:
        """The severity and the message without its particulars: what repeats when one rule is broken often."""
        return f"{self.severity}: {_RUNS.sub('…', _PARTICULARS.sub('…', self.message))}"


def error(origin: Origin, path: str, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(ERROR, origin.file, origin.line, origin.column, path, message, hint)


def warning(origin: Origin, path: str, message: str, hint: str | None = None) -> Diagnostic:
    return Diagnostic(WARNING, origin.file, origin.line, origin.column, path, message, hint)


def sort_key(diagnostic: Diagnostic) -> tuple:
    return (diagnostic.file, diagnostic.line, diagnostic.column, not diagnostic.is_error, diagnostic.message)


def render_diagnostics(diagnostics: Iterable[Diagnostic], fmt: str = "text", *,
                       per_kind: int | None = SHOWN_PER_KIND) -> str:
    """``text``: one block per diagnostic as an editor's problem list reads, at most ``per_kind`` of each
    kind (None: all) and then a line saying how many more; ``json``: a JSON array of all."""
    items = sorted(diagnostics, key=sort_key)
    if fmt == "json":
        return json.dumps([d.to_json() for d in items], indent=2, ensure_ascii=False)
    if fmt != "text":
        raise ValueError(f"unknown diagnostics format {fmt!r}")
    if per_kind is None:
        return "\n".join(str(d) for d in items)
    seen: Counter[str] = Counter()
    lines = []
    for diagnostic in items:
        kind = diagnostic.kind
        seen[kind] += 1
        if seen[kind] <= per_kind:
            lines.append(str(diagnostic))
    for kind, count in seen.items():
        if count > per_kind:
            severity, _, message = kind.partition(": ")
            lines.append(f"... and {count - per_kind:,} more {severity}s of this kind: {message} "
                         "(facesync -v validate, or --format json, lists every one)")
    return "\n".join(lines)
