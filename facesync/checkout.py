"""Where a manifest lives, so that a saved plan can name it and find its images in another checkout.

A plan made in one folder (a CI job's checkout) is applied in another (another job, another runner).
The plan therefore records the manifest's path relative to a root both can name: the git checkout
around the manifest, else the working folder when the manifest is inside it, else the manifest's own
folder. ``apply`` takes the root as ``--chdir DIR``, else the first that holds the manifest of: the git
checkout around the working folder, the working folder, and the folder the plan was made in (on the
same machine, when it still holds that very manifest), and says which it used. git is asked with
``git rev-parse``; without git, or outside a checkout, the other roots apply and no commit is named.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, replace

GIT_TIMEOUT_S = 10


@dataclass(frozen=True)
class Root:
    """A folder relative paths are taken from, and how it was chosen (for messages)."""

    path: str  # absolute, real
    kind: str  # "git checkout", "--chdir", "working folder", "manifest's folder"
    commit: str = ""  # HEAD of the git checkout, when it is one
    changed: bool = False  # the manifest's folder differs from that commit (edited, added, untracked files)

    def describe(self) -> str:
        return f"{self.path} ({self.kind})"


def _git(folder: str, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, check=False,
                              timeout=GIT_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    answer = done.stdout.strip()
    return answer if done.returncode == 0 and answer else None


def git_checkout(folder: str) -> Root | None:
    """The git checkout that holds ``folder``, with its commit; None outside one (or without git)."""
    top = _git(folder, "rev-parse", "--show-toplevel")
    if top is None:
        return None
    return Root(os.path.realpath(top), "git checkout", _git(folder, "rev-parse", "HEAD") or "")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def manifest_place(manifest_path: str) -> tuple[str, Root]:
    """The manifest's path relative to the root a plan records (forward slashes), and that root."""
    real = os.path.realpath(manifest_path)
    folder = os.path.dirname(real)
    root = git_checkout(folder)
    if root is None or not _inside(real, root.path):
        cwd = os.path.realpath(os.getcwd())
        root = Root(cwd, "working folder") if _inside(real, cwd) else Root(folder, "manifest's folder")
    elif _git(folder, "status", "--porcelain", "--", "."):
        root = replace(root, changed=True)
    return os.path.relpath(real, root.path).replace(os.sep, "/"), root


def apply_roots(chdir: str | None, planned_in: str = "") -> list[Root]:
    """Where ``apply PLAN.json`` looks for the manifest, in order: ``--chdir DIR`` alone when given;
    else the git checkout around the working folder, the working folder, and last the folder the plan
    was made in (trusted only when it still holds the very manifest; the caller checks)."""
    if chdir:
        real = os.path.realpath(chdir)
        checkout = git_checkout(real)
        return [Root(real, "--chdir", checkout.commit if checkout and checkout.path == real else "")]
    cwd = os.path.realpath(os.getcwd())
    roots = [root for root in (git_checkout(cwd), Root(cwd, "working folder")) if root is not None]
    if planned_in and os.path.isabs(planned_in):
        roots.append(Root(os.path.realpath(planned_in), PLANNED_IN))
    return roots


PLANNED_IN = "the folder the plan was made in"
