"""Local files named by a manifest: kept inside the manifest's folder, and judged by their content.

A manifest reviewed in a pull request must not be able to read ``/etc/passwd`` or a sibling checkout,
so every path (after ``..`` and symlinks are resolved) must stay inside the main manifest's folder.
An image is accepted by what its first bytes say (PNG, JPEG or BMP), never by its name, and by its
size (the API's 2 MB limit applies to the base64 text). Hashing streams the file in chunks; with
``hash_images=False`` only the first bytes are read and the size comes from ``stat``.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from facesync.images import base64_length, fits_base64_limit, sniff_format

SNIFF_BYTES = 32
_CHUNK = 1 << 20


class FileProblem(Exception):
    """A file cannot be used; ``hint`` says what to do."""

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class ImageFile:
    path: str
    size: int
    sha256: str | None


def inside(root: str, base_dir: str, relative: str) -> str:
    """The real path of ``relative`` (written in a file in ``base_dir``), refused if it leaves ``root``."""
    if "\0" in relative:
        raise FileProblem(f"path {relative!r} contains a NUL character")
    if os.path.isabs(relative) or relative.startswith("~"):
        raise FileProblem(f"absolute path {relative!r} is not allowed",
                          "write paths relative to the manifest, inside its folder")
    joined = os.path.normpath(os.path.join(base_dir, relative))
    real = os.path.realpath(joined)
    if not _is_within(os.path.abspath(joined), root):
        raise FileProblem(f"path {relative!r} leaves the manifest's folder",
                          f"keep images and included files inside {root}")
    if not _is_within(real, root):
        raise FileProblem(f"path {relative!r} is a symlink to a file outside the manifest's folder",
                          f"it points to {real}; copy the file into {root} instead")
    return real


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def inspect_image(path: str, shown: str, *, hash_images: bool) -> ImageFile:
    """Check that ``path`` is a usable image; ``shown`` is how messages name it."""
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise FileProblem(f"image file not found: {shown}", "check the spelling and that the file is committed")
    except OSError as problem:
        raise FileProblem(f"cannot read image {shown}: {problem.strerror}")
    if not os.path.isfile(path):
        raise FileProblem(f"{shown} is not a file", "name image files, or use a glob such as folder/*.jpg")
    size = status.st_size
    if not fits_base64_limit(size):
        raise FileProblem(
            f"image {shown} is too large: {size:,} bytes are {base64_length(size):,} characters of base64, "
            "over the API's 2 MB (2,097,152) limit",
            "resize or recompress it (below about 1.5 MB)")
    digest = hashlib.sha256() if hash_images else None
    try:
        with open(path, "rb") as handle:
            head = handle.read(_CHUNK if hash_images else SNIFF_BYTES)
            if digest is not None:
                digest.update(head)
                for chunk in iter(lambda: handle.read(_CHUNK), b""):
                    digest.update(chunk)
    except OSError as problem:
        raise FileProblem(f"cannot read image {shown}: {problem.strerror}")
    kind = sniff_format(head)
    if kind == "gif":
        raise FileProblem(f"{shown} is a GIF image; only PNG, JPEG and BMP are accepted", "convert it to PNG or JPEG")
    if kind is None:
        what = "an empty file" if size == 0 else "not a PNG, JPEG or BMP image (judged by its content)"
        raise FileProblem(f"{shown} is {what}", "use a PNG, JPEG or BMP photo of the face")
    return ImageFile(path, size, digest.hexdigest() if digest is not None else None)
