"""Which manifests a set of changed files can affect, for the pre-commit hook.

Every file a manifest reads (its includes, images, folder sources, user_info files) must lie inside the
folder of the manifest: ``facesync validate`` refuses anything else. So a manifest is affected by a
change exactly when the changed file lies inside its folder; the test never misses a manifest, and it
costs no read of any manifest or image, which is what makes the hook fast on a large repository.
Telling a photo the manifest names from an unrelated file in the same folder would cost a full load of
the manifest, which is what validating it costs anyway.

The manifests are the ones given (``--manifest``), or else every tracked file named ``faceset*.yaml`` /
``faceset*.yml`` (``git ls-files``), plus such files among the changed ones.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterable, Sequence

MANIFEST_NAME = re.compile(r"(^|/)faceset[^/]*\.ya?ml$")


def _normal(path: str) -> str:
    return os.path.normpath(path).replace(os.sep, "/")


def inside(path: str, folder: str) -> bool:
    """``path`` lies in ``folder`` or below it (both relative to the same place, "." for the top)."""
    if folder in ("", "."):
        return not path.startswith("../")
    return path == folder or path.startswith(folder + "/")


def affected_manifests(manifests: Iterable[str], changed: Iterable[str]) -> list[str]:
    """The manifests (in the order given, once each) whose folder holds one of ``changed``."""
    changed_paths = [_normal(path) for path in changed]
    found: list[str] = []
    for manifest in dict.fromkeys(manifests):
        folder = os.path.dirname(_normal(manifest)) or "."
        if any(inside(path, folder) for path in changed_paths):
            found.append(manifest)
    return found


def _git_lines(*args: str) -> list[str]:
    """Lines of a git command in the current folder; none when git or the repository is missing."""
    try:
        done = subprocess.run(["git", *args], check=False, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return []
    if done.returncode != 0:
        return []
    return [line for line in done.stdout.decode("utf-8", "surrogateescape").split("\0") if line]


def tracked_manifests() -> list[str]:
    """Every file in the index named like a manifest."""
    return [path for path in _git_lines("ls-files", "-z") if MANIFEST_NAME.search(path)]


def staged_deletions() -> list[str]:
    """Files deleted in the index: pre-commit passes only files that exist, but removing a photo that a
    manifest still names breaks that manifest too."""
    return _git_lines("diff", "--cached", "--name-only", "--diff-filter=D", "-z")


def manifests_to_check(configured: Sequence[str], changed: Sequence[str]) -> list[str]:
    """The manifests a commit of ``changed`` files must validate."""
    candidates = list(configured) or [*tracked_manifests(),
                                      *(path for path in changed if MANIFEST_NAME.search(_normal(path)))]
    return [path for path in affected_manifests(candidates, [*changed, *staged_deletions()])
            if os.path.isfile(path)]
