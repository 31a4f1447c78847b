"""The plan pipeline shared by ``plan`` and ``apply``: manifest → target → refresh → resolve → Plan.

Order matters for cost: the manifest is narrowed (``--group``/``--user``) before anything is read, the
library is read before images are resolved (only users that exist live need face_tokens), and the
opened library and token cache are handed back in ``PlannedRun`` so that ``apply`` runs the plan on the
same connection and records the tokens user/add returns into the same cache. The caller closes it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from facesync import manifest
from facesync.api.protocol import FaceLibrary
from facesync.cache import FileHashes, TokenCache
from facesync.checkout import manifest_place
from facesync.errors import ConfigError
from facesync.model import Desired, ImageKind, Live
from facesync.plan.effects import structure, user_effect
from facesync.plan.ops import Plan
from facesync.plan.planner import make_plan, narrow, user_info_to_read
from facesync.plan.uploads import pin
from facesync.refresh import read_user_info, refresh
from facesync.resolve import ResolveStats, resolve_images
from facesync.targets import (
    EMPTY,
    TargetSpec,
    choose_target,
    chosen_outside_manifest,
    estimate_qps,
    open_target,
)

if TYPE_CHECKING:
    from typing_extensions import Self

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedRun:
    """A plan with everything it was made from, and the open library and cache to apply it with."""

    desired: Desired  # narrowed and resolved
    live: Live
    plan: Plan
    library: FaceLibrary
    target: TargetSpec
    cache: TokenCache
    resolve_stats: ResolveStats = field(default_factory=ResolveStats)
    warnings: tuple = ()

    def close(self) -> None:
        self.cache.close()
        close_library(self.library)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def load_desired(manifest_path: str, *, groups: tuple[str, ...] = (), users: tuple[str, ...] = (),
                 opens_target: bool = False, target: str | None = None) -> tuple[Desired, tuple]:
    """The manifest, checked (``ManifestError`` on any error) and narrowed; its warnings are logged.

    ``opens_target``: the caller goes on to ``choose_target(target, desired.target)``, whose refusal of a
    server the manifest names is then the error; it is not logged as a warning too.

    Files are not hashed here: resolve hashes only the images the diff needs, through the cache.
    """
    hashes = FileHashes.default()
    try:  # files hashed by an earlier plan (and unchanged) are not read again, not even their first bytes
        loaded = manifest.load(manifest_path, hash_images=False, known_file=hashes.known)
    finally:
        hashes.close()
    shown = loaded.warnings
    if opens_target and not chosen_outside_manifest(target):
        shown = tuple(d for d in shown if d.path != "target")
    if shown:
        log.warning("%s", manifest.render_diagnostics(shown, "text").rstrip(),
                    extra={"labelled": True})  # each line says "warning:" itself
    check_filters(loaded.desired, groups, users)
    desired = narrow(loaded.desired, set(groups) if groups else None, set(users) if users else None)
    return desired, loaded.warnings


def check_filters(desired: Desired, groups: tuple[str, ...], users: tuple[str, ...]) -> None:
    """Refuse a ``--group``/``--user`` that matches nothing in the manifest, naming what exists.

    A filter that matches nothing would otherwise plan nothing and say "No changes": a typo in a
    scheduled drift check would hide every drift. Each ``--user`` must be in one of the chosen groups.
    """
    listed = [group.group_id for group in desired.groups]
    problems = [f"--group {gid}: the manifest has no such group" for gid in dict.fromkeys(groups)
                if gid not in listed]
    chosen = [group for group in desired.groups if not groups or group.group_id in groups]
    for uid in dict.fromkeys(users):
        if any(user.user_id == uid for group in chosen for user in group.users):
            continue
        elsewhere = [group.group_id for group in desired.groups if any(u.user_id == uid for u in group.users)]
        if groups and elsewhere:
            problems.append(f"--user {uid}: not in {_listing('group', [g.group_id for g in chosen])}; "
                            f"it is in {_listing('group', elsewhere)}")
        else:
            problems.append(f"--user {uid}: no group of the manifest has this user")
    if not problems:
        return
    exist = [f"the manifest has {_listing('group', listed)}"]
    if users:
        known = sorted({user.user_id for group in chosen for user in group.users})
        where = "in the chosen groups" if groups else "in all"
        exist.append(f"{where}, {_listing('user', known)}")
    raise ConfigError("; ".join(problems), hint="; ".join(exist))


def _listing(noun: str, names: list[str], shown: int = 10) -> str:
    """``group staff`` / ``groups staff, visitors`` / ``users a, b and 5 more``."""
    if not names:
        return f"no {noun}s"
    head = ", ".join(names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{noun}{'' if len(names) == 1 else 's'} {head}{more}"


def open_cache(library: FaceLibrary) -> TokenCache:
    """The token cache of ``library`` (one a target, at the documented place)."""
    return TokenCache.for_target(library.identity)


def close_library(library: FaceLibrary) -> None:
    close = getattr(library, "close", None)
    if callable(close):
        close()


def plan_desired(desired: Desired, library: FaceLibrary, cache: TokenCache, *, qps: float | None = None,
                 concurrency: int = 8, force: bool = False, progress: bool | None = None,
                 live: Live | None = None) -> tuple[Desired, Live, Plan, ResolveStats]:
    """refresh → resolve → make_plan against an open library: the part ``apply`` may re-run.

    ``live``: a state read earlier (a snapshot) instead of a refresh; ``library`` then only answers
    ``detect`` for images the cache does not know.
    """
    from_snapshot = live is not None
    if live is None:
        live = refresh(library, desired, concurrency=concurrency, progress=progress)
    resolution = resolve_images(desired, live, library, cache, concurrency=concurrency, progress=progress)
    if not from_snapshot:
        live = read_user_info(library, live, user_info_to_read(resolution.desired, live), concurrency=concurrency)
    plan = make_plan(resolution.desired, live, qps=qps, force=force)
    return resolution.desired, live, finish_plan(plan, resolution.desired, cache), resolution.stats


def finish_plan(plan: Plan, desired: Desired, cache: TokenCache | None) -> Plan:
    """What a reviewed plan carries beside its operations: the content sha256 of every file it uploads,
    where its manifest is (relative to the checkout) and at which commit, and the names of the faces
    it removes. Reads only files that are uploaded and not already hashed."""
    plan = pin(plan, file_hasher(cache.files if cache is not None else None))
    manifest_rel, root = manifest_place(desired.manifest_path) if desired.manifest_path else ("", None)
    base = os.path.dirname(os.path.realpath(desired.manifest_path)) if desired.manifest_path else ""
    names = removed_face_names(plan, desired, cache, base)
    notes = plan.notes
    if root is not None and root.changed and root.commit:
        notes += ((f"the manifest's folder has changes not in commit {root.commit[:12]}: this plan is of the "
                   "files as they are, not as committed"),)
    return replace(plan, manifest=manifest_rel, planned_in=root.path if root else "",
                   commit=root.commit if root else "", face_names=names, notes=notes)


def file_hasher(files: FileHashes | None) -> Callable[[str], str]:
    """sha256 of a file's content, from the file-hash cache when the file is unchanged, else read."""
    def sha256_of(path: str) -> str:
        info = os.stat(path)
        known = files.sha256(path, info.st_size, info.st_mtime_ns) if files is not None else None
        if known is not None:
            return known
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        if files is not None:
            files.record(path, info.st_size, info.st_mtime_ns, digest)
        return digest

    return sha256_of


def removed_face_names(plan: Plan, desired: Desired, cache: TokenCache | None, base: str) -> dict[str, str]:
    """face_token -> how people know it, for the faces ``plan`` removes: an image of the manifest with
    that token (its file, or its ``face_token:`` entry's place), else a file the token cache knows to
    have that content (shown relative to the manifest's folder; files elsewhere are not named)."""
    removed = {token for users in structure(plan).values() for user_id, ops in users.items()
               if user_id is not None for token in user_effect(ops).removed}
    if not removed:
        return {}
    names: dict[str, str] = {}
    for group in desired.groups:
        for user in group.users:
            for image in user.images:
                token = image.face_token
                if token in removed and token not in names:
                    if image.kind is ImageKind.FACE_TOKEN:
                        names[token] = f"face_token entry at {image.origin}" if image.origin else ""
                    else:
                        names[token] = image.source
    if cache is not None and base:
        for token, path in cache.files_of_tokens(removed - names.keys()).items():
            if path.startswith(base.rstrip(os.sep) + os.sep):
                names[token] = os.path.relpath(path, base).replace(os.sep, "/")
    return {token: name for token, name in sorted(names.items()) if name}


def plan_manifest(manifest_path: str, *, target: str | None = None, qps: float | None = None,
                  concurrency: int = 8, groups: tuple[str, ...] = (), users: tuple[str, ...] = (),
                  force: bool = False, progress: bool | None = None) -> PlannedRun:
    """Everything ``facesync plan`` does before rendering; the caller closes the returned run."""
    desired, warnings = load_desired(manifest_path, groups=groups, users=users, opens_target=True, target=target)
    spec = choose_target(target, desired.target)
    library = open_target(spec, qps=qps, concurrency=concurrency, if_missing=EMPTY)
    cache = None
    try:
        cache = open_cache(library)
        resolved, live, plan, stats = plan_desired(
            desired, library, cache, qps=estimate_qps(spec, qps), concurrency=concurrency, force=force,
            progress=progress)
    except BaseException:
        if cache is not None:
            cache.close()
        close_library(library)
        raise
    return PlannedRun(resolved, live, plan, library, spec, cache, stats, warnings)
