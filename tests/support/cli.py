"""The facesync command line as tests run it: a child process, as a user's shell would start it.

Every test that checks what the command line prints or exits with goes through ``run_facesync``. The
checkout comes first on the child's PYTHONPATH, so a checkout that is not installed runs its own code.
"""

from __future__ import annotations

import os
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
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(
        part for part in (str(ROOT), environment.get("PYTHONPATH", "")) if part)
    if "input" not in options:
        options.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.run([sys.executable, "-m", "facesync", *args], check=False, capture_output=True, text=True,
                          cwd=cwd, env=environment, timeout=timeout, **options)


def environment(*, without: Iterable[str] = (), **values: str) -> dict[str, str]:
    """This process's environment without the variables ``without`` names, with ``values`` set."""
    removed = set(without)
    return {**{key: value for key, value in os.environ.items() if key not in removed}, **values}
