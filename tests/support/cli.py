"""The facesync command line as tests run it: a child process, as a user's shell would start it.

Every test that checks what the command line prints or exits with goes through ``run_facesync`` (or
``run_in_process``: the same ``main`` the console script calls, in the test's own process).
``checkout_first`` (applied to the whole test run by conftest.py) puts this checkout first on a child's
PYTHONPATH, so ``python -m facesync`` in a checkout that is not installed runs its own code, and
``command_shim`` gives such a checkout the ``facesync`` command that the CI recipes and the pre-commit hook
call by name.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def run_facesync(*args: str, cwd: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 120, **options) -> subprocess.CompletedProcess:
    """``python -m facesync ARGS``, output captured as text; the caller reads the exit code.

    ``env``: the child's whole environment (default: this process's). Standard input is empty (no
    terminal) unless ``stdin`` or ``input`` says otherwise."""
    if "input" not in options:
        options.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "facesync", *args], check=False, capture_output=True, text=True,
                          cwd=cwd, env=checkout_first(os.environ if env is None else env), timeout=timeout,
                          **options)


def checkout_first(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this checkout first on PYTHONPATH (once)."""
    paths = [part for part in env.get("PYTHONPATH", "").split(os.pathsep) if part and part != str(ROOT)]
    return {**env, "PYTHONPATH": os.pathsep.join([str(ROOT), *paths])}


def environment(*, without: Iterable[str] = (), **values: str) -> dict[str, str]:
    """This process's environment without the variables ``without`` names, with ``values`` set."""
    removed = set(without)
    return {**{key: value for key, value in os.environ.items() if key not in removed}, **values}


def run_in_process(capsys, *args: str) -> tuple[int, str, str]:
    """``facesync ARGS`` through ``facesync.cli.main`` in this process: (exit code, stdout, stderr)."""
    import pytest

    from facesync.cli import main

    with pytest.raises(SystemExit) as done:
        main(list(args))
    out, err = capsys.readouterr()
    return done.value.code, out, err


def command_shim(folder: Path) -> Path | None:
    """A folder to put first on PATH with a ``facesync`` command that runs ``python -m facesync``, when
    neither an install (next to this Python) nor PATH has the command; None when one does."""
    search = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    if shutil.which("facesync", path=search) is not None:
        return None
    command = folder / "facesync"
    command.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m facesync "$@"\n')
    command.chmod(0o755)
    return folder
