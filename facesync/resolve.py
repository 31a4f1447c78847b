"""Desired images → face_tokens, for exactly the images the diff needs, from the cache or from ``detect``.

Which images: every image of a desired user whose user_id exists live in any managed group; the
planner diffs their faces and looks among them for copy sources. Images of users that exist nowhere
live are left without a token: user/add answers with it, so building a library costs no detect. The
rule depends only on the manifest and the live library, never on the cache, so a fresh machine plans
exactly what a warm one plans.

How, for a file: (path, size, mtime_ns) → sha256 from the cache (no read), else read and hash; then
sha256 → face_token from the cache, else ``detect`` (the same image always yields the same token) and
record the answer. A URL is looked up by the URL, else detected by URL. Each distinct file or URL is
resolved once, however many users name it. Images that ``detect`` refuses are all reported together,
each with its manifest file:line and Baidu's code and log_id, before any change is made.

Offline (``resolve_known``, for plans from a snapshot) the same steps run with a lookup in place of the
cache (the snapshot's token maps, then the cache, read only) and no service: an image the lookup does
not know is given a stand-in token by the caller, and nothing is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from facesync import progress as progress_bars
from facesync.api.errors import ImageRejectedError
from facesync.api.protocol import FaceLibrary, Image
from facesync.cache import TokenCache, image_key
from facesync.errors import FacesyncError
from facesync.model import Desired, DesiredImage, ImageKind, Live
from facesync.words import counted

log = logging.getLogger(__name__)

MAX_ERRORS_SHOWN = 20


class ImageResolveError(FacesyncError):
    """One or more images could not be turned into a face_token (refused by detect, unreadable)."""

    def __init__(self, problems: tuple[str, ...]):
        shown = problems[:MAX_ERRORS_SHOWN]
        more = len(problems) - len(shown)
        lines = "\n".join(f"  {problem}" for problem in shown) + (f"\n  ... and {more} more" if more else "")
        noun = "image" if len(problems) == 1 else "images"
        super().__init__(f"{len(problems)} {noun} of the manifest cannot be used:\n{lines}",
                         hint="replace or remove these images in the manifest; nothing was changed")
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ResolveStats:
    """What resolving cost: calls to ``detect``, image bytes read, images answered by the cache alone."""

    images: int = 0
    detect_calls: int = 0
    bytes_read: int = 0
    cache_hits: int = 0


@dataclass(frozen=True, slots=True)
class Resolution:
    desired: Desired
    stats: ResolveStats


class TokenLookup(Protocol):
    """Where tokens are found without asking the service (``TokenCache`` is one)."""

    def url_token(self, url: str) -> str | None: ...

    def file_sha256(self, path: str, size: int, mtime_ns: int) -> str | None: ...

    def token(self, sha256: str) -> str | None: ...

    def only_detected(self, image: str, face_token: str) -> bool: ...


def resolve_images(desired: Desired, live: Live, library: FaceLibrary, cache: TokenCache, *,
                   concurrency: int = 8, progress: bool | None = None) -> Resolution:
    """``desired`` with face_token (and sha256, for files) filled in where the diff needs them, and the
    counts of what it cost; ``progress``: a bar on a terminal (None: if a tty)."""
    resolution = _resolve(desired, live, _Resolver(cache, library), concurrency=concurrency, progress=progress)
    return replace(resolution, desired=adopt_pending(resolution.desired, live, cache))


def adopt_pending(desired: Desired, live: Live, cache: TokenCache) -> Desired:
    """Uploads a crash kept from being recorded (``TokenCache.pending``), given back their stored tokens.

    On a service whose detect answers other tokens than it stores, such a face matches nothing. Where its
    user holds exactly one face that nothing explains (no image of the user has its token, and the cache
    does not know it as another upload) and exactly one of the images noted for that user matches no
    face, that face is that image: its token is recorded, and the image carries it. Any other case is
    left to the plan, which names the user (plan/matching.py). A note is dropped once its user was read
    and nothing is left to explain, or the manifest no longer lists the user in a group it manages."""
    pending = cache.pending()
    if not pending:
        return desired
    noted: dict[tuple[str, str], set[str]] = {}
    for key, group_id, user_id in pending:
        noted.setdefault((group_id, user_id), set()).add(key)
    adopted: dict[str, str] = {}
    settled: list[tuple[str, str]] = []
    for group in desired.groups:
        live_group = live.groups.get(group.group_id)
        listed = {user.user_id for user in group.users}
        settled += [(gid, uid) for gid, uid in noted if gid == group.group_id and uid not in listed]
        for user in group.users:
            keys = noted.get((group.group_id, user.user_id))
            live_user = live_group.users.get(user.user_id) if live_group is not None else None
            if not keys or live_user is None or live_user.face_tokens is None:
                continue  # nothing noted, or not read: the note waits
            faces = set(live_user.face_tokens)
            unmatched = {_image_key(image) for image in user.images
                         if _image_key(image) in keys and image.face_token not in faces}
            unexplained = faces - {image.face_token for image in user.images} - cache.stored_tokens(faces)
            if len(unmatched) == 1 and len(unexplained) == 1:
                adopted[unmatched.pop()] = unexplained.pop()
            if not unmatched or not unexplained:
                settled.append((group.group_id, user.user_id))
    for key, token in adopted.items():
        log.info("the face %s is the upload of %s whose answer was not recorded", token, key)
        cache.record_image(key, token)
    for group_id, user_id in settled:
        for key in noted[(group_id, user_id)]:
            cache.clear_pending(key, group_id, user_id)
    if not adopted:
        return desired
    return replace(desired, groups=tuple(
        replace(group, users=tuple(
            replace(user, images=tuple(
                replace(image, face_token=adopted[_image_key(image)], detected=False)
                if _image_key(image) in adopted else image for image in user.images))
            for user in group.users))
        for group in desired.groups))


def _image_key(image: DesiredImage) -> str | None:
    return image_key(image.kind, image.sha256, image.source)


def resolve_known(desired: Desired, live: Live, lookup: TokenLookup,
                  stand_in: Callable[[DesiredImage], str]) -> Desired:
    """As ``resolve_images`` with no service to ask and nothing written: tokens come from ``lookup`` alone,
    and an image it does not know gets ``stand_in(image)`` (``image`` with its sha256, for a file)."""
    return _resolve(desired, live, _Resolver(lookup, None, stand_in), concurrency=1, progress=False).desired


def _resolve(desired: Desired, live: Live, resolver: _Resolver, *, concurrency: int,
             progress: bool | None) -> Resolution:
    wanted = _images_to_resolve(desired, live)
    answers: dict = {}
    if wanted:
        stop = threading.Event()  # after an error that is not the image's (quota, auth): start no more calls
        with progress_bars.progress("Resolving images", total=len(wanted), enabled=progress) as bar, \
                ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(wanted)))) as pool:
            def one(image: DesiredImage) -> DesiredImage | str | None:
                if stop.is_set():
                    return None
                try:
                    return resolver.resolve_one(image)
                except BaseException:
                    stop.set()
                    raise
                finally:
                    bar.advance()
            answers = dict(zip(wanted, pool.map(one, wanted.values())))
    problems = tuple(answer for answer in answers.values() if isinstance(answer, str))
    if problems:
        raise ImageResolveError(problems)
    resolved = {key: answer for key, answer in answers.items() if isinstance(answer, DesiredImage)}
    stats = resolver.stats(len(wanted))
    log.info("resolved %s: %d from the cache, %s, %s read",
             counted(stats.images, "image"), stats.cache_hits, counted(stats.detect_calls, "detect call"),
             counted(stats.bytes_read, "byte"))
    return Resolution(_fill(desired, live, resolved), stats)


def _live_user_ids(live: Live) -> set[str]:
    return {user_id for group in live.groups.values() for user_id in group.users}


def _key(image: DesiredImage) -> tuple[str, str]:
    return (image.kind.value, image.path or image.source)


def _needs_token(image: DesiredImage) -> bool:
    return image.face_token is None and image.kind is not ImageKind.FACE_TOKEN


def _images_to_resolve(desired: Desired, live: Live) -> dict[tuple[str, str], DesiredImage]:
    """One representative image per distinct file or URL that needs a token, in manifest order."""
    live_ids = _live_user_ids(live)
    wanted: dict[tuple[str, str], DesiredImage] = {}
    for group in desired.groups:
        for user in group.users:
            if user.user_id in live_ids:
                for image in user.images:
                    if _needs_token(image):
                        wanted.setdefault(_key(image), image)
    return wanted


def _fill(desired: Desired, live: Live, resolved: dict[tuple[str, str], DesiredImage]) -> Desired:
    if not resolved:
        return desired
    live_ids = _live_user_ids(live)

    def image(img: DesiredImage) -> DesiredImage:
        answer = resolved.get(_key(img)) if _needs_token(img) else None
        return img if answer is None else replace(img, sha256=answer.sha256, face_token=answer.face_token,
                                                  detected=answer.detected)

    groups = tuple(
        replace(group, users=tuple(
            replace(user, images=tuple(image(img) for img in user.images)) if user.user_id in live_ids else user
            for user in group.users))
        for group in desired.groups)
    return replace(desired, groups=groups)


class _Resolver:
    """Resolves one image at a time (from several threads); counts what it costs. Without a library it
    asks no service and writes nothing: what ``cache`` does not know gets ``stand_in``'s token."""

    def __init__(self, cache: TokenCache | TokenLookup, library: FaceLibrary | None,
                 stand_in: Callable[[DesiredImage], str] | None = None):
        self.library = library
        self.cache = cache
        self.stand_in = stand_in
        self._lock = threading.Lock()
        self._detects = 0
        self._bytes = 0
        self._hits = 0

    def stats(self, images: int) -> ResolveStats:
        return ResolveStats(images, self._detects, self._bytes, self._hits)

    def resolve_one(self, image: DesiredImage) -> DesiredImage | str:
        """The image with its token, or a one-line problem naming where the manifest says it."""
        try:
            if image.kind is ImageKind.URL:
                return self._url(image)
            return self._file(image)
        except ImageRejectedError as error:
            return _problem(image, f"refused by detect: Baidu error {error.error_code} ({error.error_msg}),"
                                   f" log_id {error.log_id}")
        except OSError as error:  # other API errors (auth, quota, transport) stop the run as they are
            return _problem(image, f"cannot be read: {error.strerror or error}")

    def _url(self, image: DesiredImage) -> DesiredImage:
        token = self.cache.url_token(image.source)
        if token is not None:
            self._count(hits=1)
            return self._with_token(image, image.source, token)
        if self.library is None:
            return replace(image, face_token=self.stand_in(image))
        token = self._detect(Image.from_url(image.source))
        self.cache.record_detected(image.source, token)
        return self._with_token(image, image.source, token)

    def _file(self, image: DesiredImage) -> DesiredImage:
        path = os.path.abspath(image.path or image.source)
        sha256 = image.sha256
        if sha256 is None:
            info = os.stat(path)
            sha256 = self.cache.file_sha256(path, info.st_size, info.st_mtime_ns)
            if sha256 is None:
                data = self._read(path)
                sha256 = hashlib.sha256(data).hexdigest()
                if self.library is not None:
                    self.cache.record_file(path, info.st_size, info.st_mtime_ns, sha256)
                return self._token_for(image, sha256, data)
        return self._token_for(image, sha256, None)

    def _token_for(self, image: DesiredImage, sha256: str, data: bytes | None) -> DesiredImage:
        token = self.cache.token(sha256)
        if token is not None:
            if data is None:
                self._count(hits=1)
            return self._with_token(replace(image, sha256=sha256), sha256, token)
        if self.library is None:
            known = replace(image, sha256=sha256)
            return replace(known, face_token=self.stand_in(known))
        if data is None:
            data = self._read(os.path.abspath(image.path or image.source))
            sha256 = hashlib.sha256(data).hexdigest()  # the bytes sent to detect are the truth
        token = self._detect(Image.from_bytes(data))
        self.cache.record_detected(sha256, token)
        return self._with_token(replace(image, sha256=sha256), sha256, token)

    def _with_token(self, image: DesiredImage, key: str, token: str) -> DesiredImage:
        return replace(image, face_token=token, detected=self.cache.only_detected(key, token))

    def _read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            data = handle.read()
        self._count(read=len(data))
        return data

    def _detect(self, image: Image) -> str:
        self._count(detects=1)
        detection = self.library.detect(image)
        if not detection.faces:
            raise ImageRejectedError(222202, "pic not has face", detection.log_id)
        return detection.faces[0].face_token

    def _count(self, *, detects: int = 0, read: int = 0, hits: int = 0) -> None:
        with self._lock:
            self._detects += detects
            self._bytes += read
            self._hits += hits


def _problem(image: DesiredImage, what: str) -> str:
    where = f"{image.origin}: " if image.origin is not None else ""
    return f"{where}{image.source} {what}"


