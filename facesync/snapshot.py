"""Live state saved to a file, and plans made from it with no network: reviews of pull requests from
forks, which have no credentials.

``take_snapshot`` reads what a plan of the manifest reads (``refresh``) and resolves the manifest's
images the way a plan does (token cache, then ``detect``); the file keeps that Live and the token map
(content sha256 → face_token, URL → face_token), with the images whose token only ``detect`` answered, so
an offline plan names the users it would replace on them as an online plan does (plan/matching.py).
Without a manifest it reads the whole library (every group, user, user_info and face) and keeps no token
map. The format is ``schemas/snapshot.schema.json``
(``format_version`` 1); ``load_snapshot`` refuses, with ``SnapshotError`` naming the place, anything
else.

``Session.offline(SNAPSHOT).plan`` plans a manifest against a snapshot: the snapshot is projected onto
the manifest's scope (so the plan equals an online plan of the same state), and images are resolved
from the snapshot's token map and the local token cache only. Choices:

- The manifest may have moved on since the snapshot (that is the point of a pull request). A managed
  group, a user's faces or a managed user_info the snapshot did not read cannot be planned: refused
  with ``SnapshotError`` naming them (take the snapshot with this manifest, or of the whole library).
- An image of an existing user whose face_token neither the snapshot nor the cache knows is taken as
  not present, so the plan adds it (as an upload, its token unknown), and ``Plan.notes`` says how many.
  This is right for a new photo. It could be wrong only if the user also has faces that no known image
  accounts for and the group prunes: such a face might be that very photo, and a plan deleting it could
  lose a face the manifest wants. That case is refused with ``SnapshotError``.
- ``Plan.live_source`` names the file, the library and the snapshot's time and age; ``Plan.target`` is
  the library the snapshot was taken of, so ``apply PLAN.json`` refuses any other library, and the
  executor checks every fact the plan was made on against the library before changing anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from facesync import __version__
from facesync import progress as progress_bars
from facesync.api.protocol import FaceLibrary
from facesync.cache import DetectAgreement, TokenCache
from facesync.clock import utc_epoch, utc_now
from facesync.errors import FacesyncError
from facesync.export import ExportedUser, read_library
from facesync.files import atomic_output
from facesync.model import (
    Desired,
    DesiredImage,
    ImageKind,
    Live,
    LiveGroup,
    LiveUser,
)
from facesync.plan.ops import Operation, Plan
from facesync.plan.planner import make_plan, user_info_to_read
from facesync.refresh import listed_group_ids, read_user_info, refresh, scope_of
from facesync.resolve import resolve_images, resolve_known
from facesync.targets import estimate_qps, target_of_identity
from facesync.words import counted

FORMAT_VERSION = 1
SCOPE_MANIFEST = "manifest"
SCOPE_LIBRARY = "library"
MAX_SHOWN = 20
_UNRESOLVED = "unresolved:"  # prefix of the stand-in token an unknown image carries through the planner


class SnapshotError(FacesyncError):
    """A snapshot file cannot be read, or cannot answer for the manifest being planned."""


@dataclass(frozen=True)
class Snapshot:
    """A saved Live and the token map resolved with it. ``taken_at``: UTC ISO 8601; ``target``: the
    identity of the library read."""

    live: Live
    tokens: dict[str, str]
    taken_at: str
    target: str
    url_tokens: dict[str, str] = field(default_factory=dict)
    scope: str = SCOPE_MANIFEST
    manifest_digest: str = ""
    detected: frozenset[str] = frozenset()  # images (sha256 or URL) whose token only detect answered


@dataclass(frozen=True)
class OfflinePlan:
    """What ``plan_snapshot`` made, and from what. ``unresolved``: images planned as new because their
    face_token is unknown offline."""

    desired: Desired
    live: Live
    plan: Plan
    snapshot: Snapshot
    unresolved: tuple[DesiredImage, ...] = ()


# -- taking -------------------------------------------------------------------------------------------


def take_snapshot(library: FaceLibrary, desired: Desired | None, cache: TokenCache, *, concurrency: int = 8,
                  progress: bool | None = None, read: Callable[..., Live] = refresh) -> Snapshot:
    """The library as a plan of ``desired`` reads it (None: the whole library), with its token map.
    ``read``: how ``desired``'s scope is read (``refresh``, or ``incremental.read_tracked``)."""
    taken_at = utc_now()
    if desired is None:
        live = _read_whole(library, concurrency=concurrency, progress=progress)
        return Snapshot(live, {}, taken_at, library.identity, scope=SCOPE_LIBRARY)
    live = read(library, desired, concurrency=concurrency, progress=progress)
    resolved = resolve_images(desired, live, library, cache, concurrency=concurrency, progress=progress).desired
    live = read_user_info(library, live, user_info_to_read(resolved, live), concurrency=concurrency)
    tokens: dict[str, str] = {}
    url_tokens: dict[str, str] = {}
    detected: set[str] = set()
    for image in _images(resolved):
        if image.face_token is None:
            continue
        if image.kind is ImageKind.FILE and image.sha256:
            tokens[image.sha256] = image.face_token
        elif image.kind is ImageKind.URL:
            url_tokens[image.source] = image.face_token
        else:
            continue
        if image.detected:
            detected.add(image.sha256 if image.kind is ImageKind.FILE else image.source)
    return Snapshot(live, tokens, taken_at, library.identity, url_tokens, SCOPE_MANIFEST, desired.digest,
                    frozenset(detected))


def _read_whole(library: FaceLibrary, *, concurrency: int, progress: bool | None) -> Live:
    with progress_bars.progress("Reading the library", enabled=progress) as bar:
        group_ids = listed_group_ids(library)
        readable = list(group_ids)
        users: dict[str, dict[str, LiveUser]] = {group_id: {} for group_id in readable}
        for event in read_library(library, readable, concurrency=concurrency, bar=bar):
            if isinstance(event, ExportedUser):
                users[event.group_id][event.user_id] = LiveUser(event.user_id, event.face_tokens, event.user_info)
    groups = {group_id: LiveGroup(group_id, members) for group_id, members in users.items()}
    return Live(group_ids, groups, identity=library.identity, fetched_at=time.time(), source="refresh")


def _images(desired: Desired) -> Iterable[DesiredImage]:
    for group in desired.groups:
        for user in group.users:
            yield from user.images


# -- the file -----------------------------------------------------------------------------------------


def to_document(snapshot: Snapshot) -> dict:
    document = {
        "format_version": FORMAT_VERSION,
        "taken_at": snapshot.taken_at,
        "target": snapshot.target,
        "scope": snapshot.scope,
        "facesync_version": __version__,
        "group_ids": list(snapshot.live.group_ids),
        "groups": [
            {"group_id": group.group_id,
             "users": [{"user_id": user.user_id,
                        "face_tokens": None if user.face_tokens is None else list(user.face_tokens),
                        "user_info": user.user_info} for user in group.users.values()]}
            for group in snapshot.live.groups.values()
        ],
        "tokens": dict(sorted(snapshot.tokens.items())),
        "url_tokens": dict(sorted(snapshot.url_tokens.items())),
        **({"detected": sorted(snapshot.detected)} if snapshot.detected else {}),
    }
    if snapshot.manifest_digest:
        document["manifest_digest"] = snapshot.manifest_digest
    return document


def write_snapshot(snapshot: Snapshot, path: str | os.PathLike) -> None:
    """Atomically: ``path`` holds the old file or the whole new one."""
    with atomic_output(str(path), what="snapshot") as handle:
        json.dump(to_document(snapshot), handle, indent=1, ensure_ascii=False)
        handle.write("\n")


def load_snapshot(path: str | os.PathLike) -> Snapshot:
    """The snapshot in ``path``, checked against the schema; ``SnapshotError`` says what is wrong."""
    name = str(path)
    hint = "pass a file written by `facesync snapshot --out FILE`"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SnapshotError(f"cannot read snapshot {name}: {getattr(error, 'strerror', None) or error}",
                            hint=hint) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise SnapshotError(f"{name}:{error.lineno}:{error.colno}: not JSON: {error.msg}", hint=hint) from None
    version = document.get("format_version") if isinstance(document, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise SnapshotError(f"{name} has snapshot format {version}; this facesync reads format {FORMAT_VERSION}",
                            hint="upgrade facesync, or take the snapshot with this version")
    _validate(document, name, hint)
    return from_document(document, name)


def _validate(document: object, name: str, hint: str) -> None:
    import jsonschema

    from facesync import schemas

    validator = jsonschema.Draft202012Validator(schemas.load("snapshot"))
    problems = sorted(validator.iter_errors(document), key=lambda e: list(map(str, e.absolute_path)))
    if problems:
        lines = [f"  at {_pointer(p.absolute_path)}: {p.message if len(p.message) < 200 else p.message[:200] + '...'}"
                 for p in problems[:MAX_SHOWN]]
        more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        noun = "problem" if len(problems) == 1 else "problems"
        raise SnapshotError(f"{name} is not a valid facesync snapshot ({len(problems)} {noun}):\n"
                            + "\n".join(lines) + more, hint=hint)


def _pointer(path) -> str:
    return "/" + "/".join(str(part) for part in path) if path else "(top level)"


def from_document(document: dict, name: str = "the snapshot") -> Snapshot:
    group_ids = tuple(document["group_ids"])
    known = set(group_ids)
    groups: dict[str, LiveGroup] = {}
    for index, group in enumerate(document["groups"]):
        group_id = group["group_id"]
        where = f"{name}: at /groups/{index}"
        if group_id in groups:
            raise SnapshotError(f"{where}: group {group_id} is listed twice")
        if group_id not in known:
            raise SnapshotError(f"{where}: group {group_id} is not in group_ids")
        users: dict[str, LiveUser] = {}
        for user in group["users"]:
            if user["user_id"] in users:
                raise SnapshotError(f"{where}: user {user['user_id']} is listed twice in group {group_id}")
            tokens = user["face_tokens"]
            users[user["user_id"]] = LiveUser(user["user_id"], None if tokens is None else tuple(tokens),
                                              user["user_info"])
        groups[group_id] = LiveGroup(group_id, users)
    taken_at = document["taken_at"]
    live = Live(group_ids, groups, identity=document["target"], fetched_at=utc_epoch(taken_at),
                source=f"snapshot {name}")
    return Snapshot(live, dict(document["tokens"]), taken_at, document["target"],
                    dict(document.get("url_tokens", {})), document["scope"], document.get("manifest_digest", ""),
                    frozenset(document.get("detected", ())))


def age_text(seconds: float) -> str:
    """How long ago, as people say it: 40 s, 12 min, 3 h, 2 days."""
    if seconds < -60:
        return "in the future: check the clocks"
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{int(seconds)} s ago"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min ago"
    if seconds < 48 * 3600:
        return f"{round(seconds / 3600)} h ago"
    return f"{round(seconds / 86400)} days ago"


def describe_source(snapshot_path: str, snapshot: Snapshot, now: float | None = None) -> str:
    """``Plan.live_source`` of a plan made from a snapshot."""
    age = (time.time() if now is None else now) - utc_epoch(snapshot.taken_at)
    return f"snapshot {snapshot_path} of {snapshot.target} taken at {snapshot.taken_at} ({age_text(age)})"


# -- planning offline ---------------------------------------------------------------------------------


def coverage_problems(desired: Desired, live: Live) -> tuple[str, ...]:
    """What a plan of ``desired`` needs that ``live`` (from a snapshot) did not read."""
    existing = set(live.group_ids)
    scope = scope_of(desired)
    problems: list[str] = []
    for gid in scope.desired_users:
        if gid not in existing:
            continue
        live_group = live.groups.get(gid)
        if live_group is None:
            problems.append(f"group {gid}: its users were not read")
            continue
        for uid, live_user in live_group.users.items():
            if scope.reads_faces(gid, uid) and live_user.face_tokens is None:
                problems.append(f"user {gid}/{uid}: faces were not read")
            if scope.reads_user_info(uid) and live_user.user_info is None:
                problems.append(f"user {gid}/{uid}: user_info was not read")
    return tuple(problems)


def project(live: Live, desired: Desired) -> Live:
    """``live`` cut to what ``refresh`` reads for ``desired``: an offline plan equals an online one. The
    user_info of a named user is kept too: an online plan reads it when it adds faces to the user
    (``read_user_info``), and the snapshot already holds it."""
    scope = scope_of(desired)
    groups: dict[str, LiveGroup] = {}
    for gid in scope.desired_users:
        live_group = live.groups.get(gid)
        if live_group is None:
            continue
        groups[gid] = LiveGroup(gid, {
            uid: LiveUser(uid, user.face_tokens if scope.reads_faces(gid, uid) else None,
                          user.user_info if scope.reads_faces(gid, uid) or scope.reads_user_info(uid) else None)
            for uid, user in live_group.users.items()
        })
    return replace(live, groups=groups)


@dataclass(frozen=True)
class _Offline:
    desired: Desired
    unresolved: tuple[DesiredImage, ...]


def resolve_offline(desired: Desired, live: Live, snapshot: Snapshot, cache: TokenCache | None) -> _Offline:
    """Images resolved by the steps an online plan takes (``resolve.py``), from the snapshot's maps and the
    cache and with no call; the images neither knows carry a stand-in token (``unresolved:...``) that
    ``plan_snapshot`` removes from the plan."""
    unresolved: list[DesiredImage] = []

    def stand_in(image: DesiredImage) -> str:
        unresolved.append(image)
        return _UNRESOLVED + (image.sha256 or hashlib.sha256((image.path or image.source).encode()).hexdigest())

    resolved = resolve_known(desired, live, _SnapshotTokens(snapshot, cache), stand_in)
    return _Offline(resolved, tuple(unresolved))


@dataclass(frozen=True)
class _SnapshotTokens:
    """The snapshot's token maps, then the local token cache (read only): what an offline plan knows."""

    snapshot: Snapshot
    cache: TokenCache | None

    def url_token(self, url: str) -> str | None:
        return self.snapshot.url_tokens.get(url) or (self.cache.url_token(url) if self.cache else None)

    def file_sha256(self, path: str, size: int, mtime_ns: int) -> str | None:
        return self.cache.file_sha256(path, size, mtime_ns) if self.cache else None

    def token(self, sha256: str) -> str | None:
        return self.snapshot.tokens.get(sha256) or (self.cache.token(sha256) if self.cache else None)

    def only_detected(self, image: str, face_token: str) -> bool:
        """Whether the token the snapshot (or else the cache) gives was only detected; never once the cache
        knows that detect and user/add agree."""
        if self.cache is not None and self.cache.detect_agreement() is DetectAgreement.EQUAL:
            return False
        known = self.snapshot.url_tokens.get(image) if "://" in image else self.snapshot.tokens.get(image)
        if known == face_token:
            return image in self.snapshot.detected
        return self.cache.only_detected(image, face_token) if self.cache else False


def unsafe_guesses(desired: Desired, live: Live, snapshot: Snapshot) -> tuple[str, ...]:
    """Users for whom "an unknown image is a new face" could delete a face the manifest wants: the
    group prunes, and the user has faces that no known image accounts for."""
    known = set(snapshot.tokens.values()) | set(snapshot.url_tokens.values())
    for image in _images(desired):
        if image.face_token and not image.face_token.startswith(_UNRESOLVED):
            known.add(image.face_token)
    problems = []
    for group in desired.groups:
        live_group = live.groups.get(group.group_id)
        if live_group is None or not group.prune:
            continue
        for user in group.users:
            live_user = live_group.users.get(user.user_id)
            if live_user is None or not live_user.face_tokens:
                continue
            guessed = [image for image in user.images if (image.face_token or "").startswith(_UNRESOLVED)]
            unaccounted = [token for token in live_user.face_tokens if token not in known]
            if guessed and unaccounted:
                more = f" and {counted(len(guessed) - 1, 'more image')}" if len(guessed) > 1 else ""
                problems.append(f"user {group.group_id}/{user.user_id}: {guessed[0].source}{more} not in the "
                                f"snapshot, and the library holds {counted(len(unaccounted), 'face')} of no known "
                                f"image: {' '.join(unaccounted[:3])}")
    return tuple(problems)


def _without_stand_ins(op: Operation) -> Operation:
    if op.face is not None and (op.face.face_token or "").startswith(_UNRESOLVED):
        return replace(op, face=replace(op.face, face_token=None))
    return op


def plan_snapshot(desired: Desired, snapshot: Snapshot, snapshot_path: str, *, cache: TokenCache | None = None,
                  qps: float | None = None, force: bool = False, reupload: bool = False,
                  now: float | None = None) -> OfflinePlan:
    """Plan ``desired`` (loaded, narrowed) against ``snapshot``, with no network; the plan is pinned and
    named as an online one is (``session.finish_plan``), so it can be saved, shown and applied alike."""
    from facesync.session import finish_plan

    gaps = coverage_problems(desired, snapshot.live)
    if gaps:
        raise SnapshotError(_listing(f"snapshot {snapshot_path} does not hold what this manifest needs", gaps),
                            hint="take the snapshot with this manifest (facesync snapshot MANIFEST --out FILE), "
                                 "or of the whole library (facesync snapshot --out FILE)")
    source = describe_source(snapshot_path, snapshot, now)
    live = replace(project(snapshot.live, desired), source=source)
    offline = resolve_offline(desired, live, snapshot, cache)
    risky = unsafe_guesses(offline.desired, live, snapshot)
    if risky:
        raise SnapshotError(_listing("images unknown to the snapshot belong to users whose other faces it cannot "
                                     "identify; planning them offline could delete a face the manifest wants", risky),
                            hint="take the snapshot with this manifest (facesync snapshot MANIFEST --out FILE), "
                                 "or plan online")
    unread = user_info_to_read(offline.desired, live)
    if unread:
        raise SnapshotError(_listing(f"snapshot {snapshot_path} lacks the user_info of users this plan adds faces "
                                     "to (it must be sent back to be kept)", tuple(sorted(unread))),
                            hint="take the snapshot with this manifest (facesync snapshot MANIFEST --out FILE), "
                                 "or of the whole library (facesync snapshot --out FILE)")
    qps = estimate_qps(target_of_identity(snapshot.target), qps)
    plan = make_plan(offline.desired, live, target=snapshot.target, qps=qps, force=force, reupload=reupload)
    notes = list(plan.notes)
    if offline.unresolved:
        shown = ", ".join(image.source for image in offline.unresolved[:5])
        more = f" and {len(offline.unresolved) - 5} more" if len(offline.unresolved) > 5 else ""
        notes.append(f"new faces planned for {counted(len(offline.unresolved), 'image')} unknown to the snapshot: "
                     f"{shown}{more}")
    plan = replace(plan, operations=tuple(_without_stand_ins(op) for op in plan.operations), notes=tuple(notes))
    plan = finish_plan(plan, offline.desired, cache)
    return OfflinePlan(offline.desired, live, plan, snapshot, offline.unresolved)


def _listing(title: str, lines: tuple[str, ...]) -> str:
    shown = "\n".join(f"  - {line}" for line in lines[:MAX_SHOWN])
    more = f"\n  ... and {len(lines) - MAX_SHOWN} more" if len(lines) > MAX_SHOWN else ""
    return f"{title}:\n{shown}{more}"
