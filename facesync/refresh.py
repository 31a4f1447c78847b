"""Live from the list endpoints: only what the manifest manages, every page once, the fewest calls.

Calls, in two waves (the second needs the first's answers; each wave runs concurrently):

1. ``group/getlist`` (all pages), then ``group/getusers`` (all pages) for each managed group that exists;
2. ``face/getlist`` for each (group, user) that is both live and desired, and ``user/get`` with ``@ALL``
   once for each distinct user_id whose user_info the manifest manages and that exists live in a
   managed group (its memberships fill user_info in every managed group at once).

A third, small wave belongs to planning rather than reading: ``read_user_info`` fills in the user_info of
the users a plan would add faces to although the manifest does not manage their user_info (the add must
send it back; see ``planner.user_info_to_read``). An in-sync library needs none of these calls.

Users that are only to be deleted get no face list (``face_tokens`` None), but for one case, read in a
third small wave (``users_giving_tokens``): in a pruned group where the manifest names a face by
face_token that none of the group's named users holds, a user only to be deleted may hold it. That is a
move (an exported manifest with a user renamed) the planner must see, to keep the token usable with a
staging copy while the face changes user. Groups the manifest does not name are not read (their ids
come with group/getlist, enough for ``delete_unlisted_groups``).

Races with other writers are answered as the library now is: a group gone between getlist and getusers
is absent; a user listed by getusers but gone by face/getlist (223103) is absent from that group, and
one that user/get no longer finds anywhere is absent from every group.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace

from facesync import progress as progress_bars
from facesync.api.errors import GroupNotFoundError, UserNotFoundError
from facesync.api.protocol import ALL_GROUPS, FaceLibrary, iter_group_ids, iter_user_ids
from facesync.model import Desired, ImageKind, Live, LiveGroup, LiveUser, is_lock_group
from facesync.words import counted

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Scope:
    """What a plan of the manifest reads (the rules above): the refresh reads it, and a snapshot is cut
    to it and checked against it, so an offline plan sees what an online one sees."""

    desired_users: dict[str, frozenset[str]]  # managed group_id -> user_ids the manifest names in it
    managed_info: frozenset[str]  # user_ids whose user_info is managed somewhere

    def reads_faces(self, group_id: str, user_id: str) -> bool:
        return user_id in self.desired_users.get(group_id, ())

    def reads_user_info(self, user_id: str) -> bool:
        return user_id in self.managed_info


def scope_of(desired: Desired) -> Scope:
    users = {group.group_id: frozenset(user.user_id for user in group.users) for group in desired.groups}
    info = frozenset(user.user_id for group in desired.groups for user in group.users if user.user_info is not None)
    return Scope(users, info)


def refresh(library: FaceLibrary, desired: Desired, *, concurrency: int = 8,
            progress: bool | None = None) -> Live:
    """What ``library`` holds within ``desired``'s scope."""
    scope = scope_of(desired)
    with progress_bars.progress("Reading the library", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        bar.add_total(1)
        group_ids = listed_group_ids(library)
        bar.advance()
        existing = set(group_ids)
        managed = [group_id for group_id in scope.desired_users if group_id in existing]

        bar.add_total(len(managed))
        listed = _run(pool, {group_id: (lambda g=group_id: _users_of(library, g)) for group_id in managed}, bar)
        members = {group_id: users for group_id, users in listed.items() if users is not None}

        face_calls = {
            (group_id, user_id): (lambda g=group_id, u=user_id: read_faces(library, g, u))
            for group_id, users in members.items()
            for user_id in users if scope.reads_faces(group_id, user_id)
        }
        live_ids = {user_id for users in members.values() for user_id in users}
        info_calls = {
            user_id: (lambda u=user_id: read_memberships(library, u))
            for user_id in sorted(scope.managed_info & live_ids)
        }
        bar.add_total(len(face_calls) + len(info_calls))
        faces = _run(pool, face_calls, bar)
        infos = _run(pool, info_calls, bar)

        leaving = {
            (group_id, user_id): (lambda g=group_id, u=user_id: read_faces(library, g, u))
            for group_id, user_id in users_giving_tokens(desired, members, faces)
        }
        bar.add_total(len(leaving))
        faces.update(_run(pool, leaving, bar))
        face_calls.update(leaving)

    groups = {
        group_id: LiveGroup(group_id, _live_users(group_id, users, faces, infos))
        for group_id, users in members.items()
    }
    calls = 1 + len(managed) + len(face_calls) + len(info_calls)
    log.info("read %s of %d with at least %s", counted(len(groups), "managed group"), len(group_ids),
             counted(calls, "call"))
    return Live(group_ids=group_ids, groups=groups, identity=library.identity, fetched_at=time.time(),
                source="refresh")


def users_giving_tokens(desired: Desired, members: dict[str, list[str]],
                        faces: dict[tuple[str, str], tuple[str, ...] | None]) -> list[tuple[str, str]]:
    """(group, user) of the live users only to be deleted in pruned groups where the manifest names a face
    by a face_token that no named user of the group holds (``faces``: what was read of the named ones)."""
    found = []
    for group in desired.groups:
        users = members.get(group.group_id)
        if users is None or not group.prune or group.scope_users is not None:
            continue
        by_token = {image.face_token for user in group.users for image in user.images
                    if image.kind is ImageKind.FACE_TOKEN}
        if not by_token:
            continue
        named = {user.user_id for user in group.users}
        held = {token for user_id in named for token in faces.get((group.group_id, user_id)) or ()}
        if by_token <= held:
            continue
        found += [(group.group_id, user_id) for user_id in users if user_id not in named]
    return found


def listed_group_ids(library: FaceLibrary) -> tuple[str, ...]:
    """The library's group ids (group/getlist) as a plan sees them: facesync's apply locks left out."""
    return tuple(group_id for group_id in iter_group_ids(library) if not is_lock_group(group_id))


def read_user_info(library: FaceLibrary, live: Live, user_ids: frozenset[str] | set[str], *,
                   concurrency: int = 8) -> Live:
    """``live`` with the user_info of ``user_ids`` filled in, in every managed group (user/get @ALL once
    each). A user gone since the refresh keeps None: the plan then refuses, and a re-run reads afresh."""
    if not user_ids:
        return live
    ordered = sorted(user_ids)
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(ordered)))) as pool:
        infos = dict(zip(ordered, pool.map(lambda user_id: read_memberships(library, user_id), ordered)))
    groups = {}
    for group_id, group in live.groups.items():
        users = dict(group.users)
        for user_id in ordered:
            user = users.get(user_id)
            memberships = infos[user_id] or {}
            if user is not None and user.user_info is None and group_id in memberships:
                users[user_id] = LiveUser(user_id, user.face_tokens, memberships[group_id])
        groups[group_id] = LiveGroup(group_id, users)
    log.info("read the user_info of %d user(s) the plan adds faces to", len(ordered))
    return replace(live, groups=groups)


def _live_users(group_id: str, user_ids: list[str], faces: dict, infos: dict) -> dict[str, LiveUser]:
    users: dict[str, LiveUser] = {}
    for user_id in user_ids:
        face_tokens = faces.get((group_id, user_id), ())
        if face_tokens is None:  # gone since getusers listed it
            continue
        user_info = None
        if user_id in infos:
            memberships = infos[user_id]
            if memberships is None or group_id not in memberships:  # gone since getusers listed it
                continue
            user_info = memberships[group_id]
        users[user_id] = LiveUser(user_id, face_tokens if (group_id, user_id) in faces else None, user_info)
    return users


def _users_of(library: FaceLibrary, group_id: str) -> list[str] | None:
    try:
        return list(iter_user_ids(library, group_id))
    except GroupNotFoundError:
        return None


def read_faces(library: FaceLibrary, group_id: str, user_id: str) -> tuple[str, ...] | None:
    """The user's face_tokens, or None when the user (or its group) is gone: a race, not an error."""
    try:
        return tuple(face.face_token for face in library.face_getlist(group_id, user_id).faces)
    except (UserNotFoundError, GroupNotFoundError):
        return None


def read_memberships(library: FaceLibrary, user_id: str) -> dict[str, str] | None:
    """group_id -> user_info of every group the user is in (one user/get @ALL), or None when gone."""
    try:
        record = library.user_get(ALL_GROUPS, user_id)
    except UserNotFoundError:
        return None
    return {membership.group_id: membership.user_info for membership in record.memberships}


def _run(pool: ThreadPoolExecutor, calls: dict, bar: progress_bars.Progress) -> dict:
    """Run every call on the pool; the first failure cancels what has not started and is raised."""
    futures: dict[Future, object] = {}
    for key, call in calls.items():
        futures[pool.submit(_counted(call, bar))] = key
    done, pending = wait(futures, return_when=FIRST_EXCEPTION)
    failed = next((future for future in done if future.exception() is not None), None)
    if failed is not None:
        for future in pending:
            future.cancel()
        wait(pending)
        raise failed.exception()
    return {futures[future]: future.result() for future in futures}


def _counted(call: Callable, bar: progress_bars.Progress) -> Callable:
    def run():
        try:
            return call()
        finally:
            bar.advance()
    return run
