"""Writing facesync's own files (plans, reports, exported manifests, snapshots) so that they are never
left half-written: a temporary file in the same folder, flushed to disk, then renamed over the target.
A crash, Ctrl-C or a full disk leaves the previous file (or none), never a part of the new one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from facesync.errors import ConfigError, FacesyncError


@contextmanager
def atomic_output(path: str | os.PathLike, *, what: str = "file") -> Iterator[TextIO]:
    """A text file at ``path`` that appears whole when the block ends without error, and not at all
    (the old one, if any, kept) when it fails or is interrupted. ``what`` names the file in errors."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    try:
        handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=folder, prefix=".facesync-",  # noqa: SIM115
                                             suffix=".tmp", delete=False)  # closed below, then renamed
    except OSError as error:
        raise ConfigError(f"cannot write the {what} {path}: {error.strerror or error}",
                          hint="give a path in a folder that exists and is writable") from None
    try:
        with handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException as error:
        try:
            os.unlink(handle.name)
        except OSError:
            pass
        if isinstance(error, OSError) and not isinstance(error, FacesyncError) and error.errno is not None:
            raise ConfigError(f"cannot write the {what} {path}: {error.strerror or error}",
                              hint="check the folder's free space and permissions") from None
        raise


def write_atomically(path: str | os.PathLike, text: str, *, what: str = "file") -> None:
    """``path`` holds either its old content or all of ``text``, never a part."""
    with atomic_output(path, what=what) as handle:
        handle.write(text)
