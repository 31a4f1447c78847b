"""Progress for long runs: a bar on a terminal, nothing otherwise (callers log plain lines instead)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class Progress:
    """Counts finished work. Thread-safe: rich's Progress locks internally; the no-op needs no lock."""

    def __init__(self, bar=None, task=None):
        self._bar = bar
        self._task = task

    @property
    def visible(self) -> bool:
        return self._bar is not None

    def advance(self, amount: int = 1) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, amount)

    def add_total(self, amount: int) -> None:
        """Grow the total as more work is discovered (refresh learns its size page by page)."""
        if self._bar is not None:
            total = self._bar.tasks[self._task].total or 0
            self._bar.update(self._task, total=total + amount)


def wanted(enabled: bool | None = None) -> bool:
    """A bar only for a person watching: stderr is a terminal, unless told otherwise."""
    return sys.stderr.isatty() if enabled is None else enabled


@contextmanager
def progress(description: str, total: int | None = None, *, enabled: bool | None = None) -> Iterator[Progress]:
    if not wanted(enabled):
        yield Progress()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
    from rich.progress import Progress as Bar

    with Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
             console=Console(stderr=True), transient=True) as bar:
        yield Progress(bar, bar.add_task(description, total=total))
