"""The public Python API: what ``facesync`` exports, and the README's example run exactly as printed."""

from __future__ import annotations

import contextlib
import io
import re
import shutil
from pathlib import Path

import facesync

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart"


def readme_example() -> str:
    """The first Python block of the README's "Python API" section."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Python API\n", 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_public_names_are_exported_documented_and_nothing_else_is_promised():
    assert {"Session", "Plan", "Operation", "ApplyResult", "OpResult", "FacesyncError"} <= set(facesync.__all__)
    for name in facesync.__all__:
        value = getattr(facesync, name)
        if name != "__version__":
            assert value.__doc__ and value.__doc__.strip(), f"{name} has no docstring"
    assert issubclass(facesync.PlanStaleError, facesync.FacesyncError)
    assert issubclass(facesync.FaceApiError, facesync.FacesyncError)
    assert "workflow" not in dir(facesync)


def test_the_readme_example_runs_as_printed(tmp_path, monkeypatch):
    shutil.copytree(QUICKSTART, tmp_path / "quickstart")
    monkeypatch.chdir(tmp_path / "quickstart")
    monkeypatch.setenv("FACESYNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("FACESYNC_TARGET", raising=False)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})  # noqa: S102
    lines = printed.getvalue().splitlines()
    assert lines[0] == "create_group staff "
    assert "add_face staff alice" in lines
    calls = next(line for line in lines if line.endswith("unsafe: False"))
    planned = lines.index(calls)
    assert calls == f"{planned} calls; unsafe: False"  # one line per operation before it, one call each
    assert sorted(lines[planned + 1:-1]) == sorted(
        f"done: {line.split()[0]} {line.split()[1]}" for line in lines[:planned])
    assert lines[-1] == f"{planned} done, 0 failed, verified: True"
    with facesync.Session("local:library.db") as session:
        assert session.plan("faceset.yaml").empty
