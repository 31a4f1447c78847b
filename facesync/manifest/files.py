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
import stat
from collections.abc import Callable
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


KnownFile = Callable[[str, int, int], bool]  # (path, size, mtime_ns): read and hashed before, unchanged


@dataclass(frozen=True)
class ImageFile:
    path: str
    size: int
    sha256: str | None


class PathGuard:
    """Resolves paths written in a manifest and refuses those that leave ``root``.

    Each folder's normalised and real paths are worked out once per load and remembered; a file's own
    name is then checked with one ``lstat``, and a file that is a symlink is resolved in full, as
    ``realpath`` would. One guard serves one load: a folder moved while loading is not noticed.
    """

    def __init__(self, root: str):
        self.root = root
        self.prefix = root.rstrip(os.sep) + os.sep
        self._real_dirs: dict[str, str] = {}
        self._folders: dict[tuple[str, str], tuple[str, str]] = {}

    def inside(self, base_dir: str, relative: str) -> str:
        """The real path of ``relative`` (written in a file in ``base_dir``), refused if it leaves ``root``."""
        return self.inside_with_status(base_dir, relative)[0]

    def inside_with_status(self, base_dir: str, relative: str) -> tuple[str, os.stat_result | None]:
        """``inside``, with the file's ``stat`` when it came for free (a file that is not a symlink)."""
        if "\0" in relative:
            raise FileProblem(f"path {relative!r} contains a NUL character")
        if os.path.isabs(relative) or relative.startswith("~"):
            raise FileProblem(f"absolute path {relative!r} is not allowed",
                              "write paths relative to the manifest, inside its folder")
        folder_part, _, name = relative.rpartition("/")
        if _POSIX and name and name != "." and name != ".." and base_dir.startswith("/"):
            # normpath(join(base_dir, relative)) is the folder's normalised path plus a plain name
            known = self._folders.get((base_dir, folder_part))
            if known is None:
                folder = os.path.normpath(os.path.join(base_dir, folder_part))
                known = self._folders[(base_dir, folder_part)] = (_with_sep(folder), _with_sep(self._real_dir(folder)))
            joined = known[0] + name
            real_folder = known[1]
        else:
            joined = os.path.normpath(os.path.join(base_dir, relative))
            if not os.path.isabs(joined):
                joined = os.path.abspath(joined)
            folder, name = os.path.split(joined)
            real_folder = None if not name or name == os.pardir else _with_sep(self._real_dir(folder))
        if not (joined == self.root or joined.startswith(self.prefix)):
            raise FileProblem(f"path {relative!r} leaves the manifest's folder",
                              f"keep images and included files inside {self.root}")
        real, status = self._real_file(joined, real_folder, name)
        if not (real == self.root or real.startswith(self.prefix)):
            raise FileProblem(f"path {relative!r} is a symlink to a file outside the manifest's folder",
                              f"it points to {real}; copy the file into {self.root} instead")
        return real, status

    def _real_dir(self, folder: str) -> str:
        real = self._real_dirs.get(folder)
        if real is None:
            real = self._real_dirs[folder] = os.path.realpath(folder)
        return real

    @staticmethod
    def _real_file(joined: str, real_folder: str | None, name: str) -> tuple[str, os.stat_result | None]:
        """``os.path.realpath(joined)``, and the ``lstat`` of the result when that is also its ``stat``
        (not a symlink). ``real_folder`` is the real path of ``joined``'s folder, ending in a separator."""
        if real_folder is None:
            return os.path.realpath(joined), None
        candidate = real_folder + name
        try:
            status = os.lstat(candidate)
        except OSError:  # missing or unreadable: realpath keeps such a name as written
            return candidate, None
        if stat.S_ISLNK(status.st_mode):
            return os.path.realpath(joined), None
        return candidate, status

    def relative(self, real: str) -> str:
        """``real`` relative to ``root``, with forward slashes, as ``os.path.relpath`` would write it."""
        if real.startswith(self.prefix):
            relative = real[len(self.prefix):]
        else:
            relative = os.path.relpath(real, self.root)
        return relative.replace(os.sep, "/")


_POSIX = os.sep == "/" and os.altsep is None


def _with_sep(folder: str) -> str:
    """``folder`` ready to have a name appended, as ``os.path.join(folder, name)`` would."""
    return folder if folder.endswith(os.sep) else folder + os.sep


def inside(root: str, base_dir: str, relative: str) -> str:
    """The real path of ``relative`` (written in a file in ``base_dir``), refused if it leaves ``root``."""
    return PathGuard(root).inside(base_dir, relative)


def inspect_image(path: str, shown: str, *, hash_images: bool, status: os.stat_result | None = None,
                  known_file: KnownFile | None = None) -> ImageFile:
    """Check that ``path`` is a usable image; ``shown`` is how messages name it; ``status`` is its
    ``os.stat`` when the caller already has it. ``known_file(path, size, mtime_ns)`` says the very same
    file was read and hashed before (after passing this check): its content is not read again."""
    if status is None:
        try:
            status = os.stat(path)
        except FileNotFoundError:
            raise FileProblem(f"image file not found: {shown}", "check the spelling and that the file is committed")
        except OSError as problem:
            raise FileProblem(f"cannot read image {shown}: {problem.strerror}")
    if not stat.S_ISREG(status.st_mode):
        raise FileProblem(f"{shown} is not a file", "name image files, or use a glob such as folder/*.jpg")
    size = status.st_size
    if not fits_base64_limit(size):
        raise FileProblem(
            f"image {shown} is too large: {size:,} bytes are {base64_length(size):,} characters of base64, "
            "over the API's 2 MB (2,097,152) limit",
            "resize or recompress it (below about 1.5 MB)")
    if not hash_images and known_file is not None and known_file(path, size, status.st_mtime_ns):
        return ImageFile(path, size, None)
    digest = hashlib.sha256() if hash_images else None
    try:
        head = _read(path, digest, size)
    except OSError as problem:
        raise FileProblem(f"cannot read image {shown}: {problem.strerror}")
    kind = sniff_format(head)
    if kind == "gif":
        raise FileProblem(f"{shown} is a GIF image; only PNG, JPEG and BMP are accepted", "convert it to PNG or JPEG")
    if kind is None:
        what = "an empty file" if size == 0 else "not a PNG, JPEG or BMP image (judged by its content)"
        raise FileProblem(f"{shown} is {what}", "use a PNG, JPEG or BMP photo of the face")
    return ImageFile(path, size, digest.hexdigest() if digest is not None else None)


def _read(path: str, digest, size: int) -> bytes:
    """The first ``SNIFF_BYTES`` of a file (fewer if it is shorter), feeding the whole file to ``digest``
    unless it is None. Plain descriptors: a buffered file object costs more than reading a small image.
    ``size`` (from ``stat``) only sizes the reads; the file is read to its end whatever it says."""
    descriptor = os.open(path, _READ_FLAGS)
    try:
        if digest is None:
            head = os.read(descriptor, SNIFF_BYTES)
            while 0 < len(head) < SNIFF_BYTES:
                more = os.read(descriptor, SNIFF_BYTES - len(head))
                if not more:
                    break
                head += more
            return head
        head = b""
        want = max(min(size + 1, _CHUNK), SNIFF_BYTES)
        while chunk := os.read(descriptor, want):
            if len(head) < SNIFF_BYTES:
                head += chunk[:SNIFF_BYTES - len(head)]
            digest.update(chunk)
            want = _CHUNK
        return head
    finally:
        os.close(descriptor)


_READ_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0)
