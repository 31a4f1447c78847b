"""``--check-faces``: every photo of a manifest looked at before Baidu sees it, reported at file:line.

A photo with no face, several faces or a face under the minimum size becomes a manifest diagnostic at
the place the manifest names it: a warning (a local detector misses faces Baidu finds, and Baidu is the
judge), or an error with ``strict``. Only local files are checked: URL images are fetched by Baidu, not
by facesync, and face_token images are faces Baidu already found.

Cost: each distinct image is scanned once; the scan is kept by content hash (``cache.py``) and the
file's hash by (path, size, mtime) in the token cache's ``files.sqlite3``, so a second check of
unchanged photos opens no image and runs no detector. Scans run on a thread per core (OpenCV releases
the interpreter lock while it decodes and searches).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from facesync import manifest
from facesync.cache import FileHashes
from facesync.errors import ManifestError
from facesync.faces.cache import ScanCache
from facesync.faces.detector import Detector
from facesync.faces.rules import FaceScan, findings
from facesync.manifest.diagnostics import Diagnostic, error, warning
from facesync.model import Desired, DesiredImage, DesiredUser, ImageKind, Origin
from facesync.plan.planner import narrow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CheckStats:
    images: int = 0  # distinct files looked at
    scanned: int = 0  # of which the detector ran on (the rest came from the cache)


def check_desired(desired: Desired, *, strict: bool = False, workers: int | None = None,
                  cache_directory: str | os.PathLike | None = None) -> tuple[tuple[Diagnostic, ...], CheckStats]:
    """The face problems of every local image of ``desired``, as diagnostics (errors when ``strict``).

    Raises ``FaceCheckUnavailable`` (with the install command) when the detector is not installed.
    """
    detector = Detector()
    places = list(_file_images(desired))
    paths = list(dict.fromkeys(image.path for _, image in places))
    hashes = FileHashes.default(cache_directory)
    cache = ScanCache.default(detector.version, cache_directory)
    try:
        scans, scanned = _scans(paths, {image.path: image.sha256 for _, image in places}, detector, hashes, cache,
                                workers or os.cpu_count() or 1)
    finally:
        cache.close()
        hashes.close()
    report = error if strict else warning
    diagnostics: dict[tuple, Diagnostic] = {}  # one per place in the manifest, not one per group it feeds
    for (group_id, user), image in places:
        scan = scans.get(image.path)
        if scan is None:
            continue  # the file went away since the manifest was read: the next load says so
        where = image.origin or user.origin or Origin(desired.manifest_path, 1, 1)
        for finding in findings(scan):
            diagnostics.setdefault((where, image.source, finding.problem), report(
                where, f"groups.{group_id}.users.{user.user_id}", f"{image.source}: {finding.message}",
                finding.hint))
    return tuple(diagnostics.values()), CheckStats(len(paths), scanned)


def check_manifest(path: str, *, strict: bool = False, groups: tuple[str, ...] = (), users: tuple[str, ...] = ()
                   ) -> tuple[Diagnostic, ...]:
    """For ``plan``: load the manifest at ``path``, narrow it as ``--group/--user`` do, check its photos'
    faces, log the warnings and raise ``ManifestError`` (before any API call) when there are errors."""
    hashes = FileHashes.default()
    try:
        loaded = manifest.load(path, hash_images=False, known_file=hashes.known)
    finally:
        hashes.close()
    desired = narrow(loaded.desired, set(groups) if groups else None, set(users) if users else None)
    found = check_desired(desired, strict=strict)[0]
    errors = [d for d in found if d.is_error]
    if errors:
        noun = "error" if len(errors) == 1 else "errors"
        raise ManifestError(f"{path}: {len(errors)} face {noun}\n{manifest.render_diagnostics(found)}", found,
                            hint="use other photos, or leave out --strict to plan anyway")
    if found:
        log.warning("%s", manifest.render_diagnostics(found))
    return found


def _file_images(desired: Desired) -> Iterator[tuple[tuple[str, DesiredUser], DesiredImage]]:
    for group in desired.groups:
        for user in group.users:
            if group.scope_users is not None and user.user_id not in group.scope_users:
                continue
            for image in user.images:
                if image.kind is ImageKind.FILE and image.path:
                    yield (group.group_id, user), image


def _scans(paths: list[str], known_sha: dict[str, str | None], detector: Detector, hashes: FileHashes,
           cache: ScanCache, workers: int) -> tuple[dict[str, FaceScan], int]:
    """path → scan for every path that can be read; from the caches where they know the file."""
    scans: dict[str, FaceScan] = {}
    missing: list[str] = []
    for path in paths:
        sha = known_sha.get(path) or _known_sha(path, hashes)
        scan = cache.get(sha) if sha else None
        if scan is not None:
            scans[path] = scan
        else:
            missing.append(path)

    def scan_file(path: str) -> tuple[str, FaceScan | None]:
        try:
            with open(path, "rb") as handle:
                info = os.fstat(handle.fileno())
                data = handle.read()
        except OSError:
            return path, None
        sha = hashlib.sha256(data).hexdigest()
        scan = detector.scan(data)
        hashes.record(path, info.st_size, info.st_mtime_ns, sha)
        cache.put(sha, scan)
        return path, scan

    if missing:
        with ThreadPoolExecutor(max_workers=max(1, min(workers, len(missing)))) as pool:
            for path, scan in pool.map(scan_file, missing):
                if scan is not None:
                    scans[path] = scan
    log.info("checked the faces of %d images (%d scanned, %d from the cache)", len(paths), len(missing),
             len(paths) - len(missing))
    return scans, len(missing)


def _known_sha(path: str, hashes: FileHashes) -> str | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return hashes.sha256(path, info.st_size, info.st_mtime_ns)
