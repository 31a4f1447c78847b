"""A manifest of what a library holds, written as the library is read, for adopting an existing library.

Reading (``read_library``): ``group/getlist`` (pages of 1000), then for each exported group, in library
order, ``group/getusers`` (pages) and for each user ``face/getlist``, plus ``user/get`` with ``@ALL`` once
per distinct user_id (its answer holds the user's user_info in every group). Calls run on a bounded
thread pool; results come back in library order through a window of at most ``window`` users in
flight, so memory stays bounded however large the library: only the memberships of users still to be
written in a later group are kept.

Writing (``write_manifest``): YAML text emitted piece by piece (scalars quoted by ``yaml.safe_dump``),
valid against ``schemas/manifest.schema.json``. Choices:

- every user gets ``user_info`` (so it is managed) and its faces as ``{face_token: "..."}`` entries,
  double-quoted (a token of digits only would otherwise read as a number), in ``face/getlist`` order;
- a user_id in several groups is listed under each group, not under ``people:``: the file reads like
  the library, group by group, and can be written before later groups are read;
- a manifest gives one person one user_info; a user whose user_info differs between exported groups
  is exported with user_info left out (unmanaged) in every group, a YAML comment at the user, and a
  warning; plan then neither compares nor changes it;
- ``target:`` is the target the export read from, so planning the file with no flags reads the same
  library; a header comment names the library's identity (app id for Baidu) and the time;
- facesync's lock group is never exported; a user or group gone while being read is left out.

Fragments (``export_fragment``), to adopt a few users into an existing manifest without re-exporting it:
the file holds only what ``include:`` takes. Whole groups (``--group``) go under ``groups:``, as above.
Single users (``--user GROUP/USER``) go under ``people:``, each with the groups it was asked for: a
group is defined in exactly one file (the existing manifest, usually), while people in any file may
join it, so the fragment adds the users without redefining their group. A user asked for in several
groups must have the same faces and user_info in each (a person has one list of images); otherwise it
is refused with a hint to export those groups whole.

``facesync.files.atomic_output`` writes the file so that an interrupted export leaves the old file (or none), never part.
"""

from __future__ import annotations

import logging
import re
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TextIO

import yaml

from facesync import progress as progress_bars
from facesync.api.errors import GroupNotFoundError
from facesync.api.protocol import FaceLibrary, iter_group_ids, iter_user_ids
from facesync.clock import utc_now
from facesync.errors import ConfigError
from facesync.model import is_own_group
from facesync.refresh import read_faces, read_memberships
from facesync.words import counted

log = logging.getLogger(__name__)

WINDOW_PER_WORKER = 16  # users in flight per worker: keeps every worker busy, memory bounded
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_YAML_WORDS = {"y", "n", "yes", "no", "on", "off", "true", "false", "null"}


@dataclass(frozen=True, slots=True)
class ExportedGroup:
    group_id: str


@dataclass(frozen=True, slots=True)
class ExportedUser:
    """One user of one group. ``user_info`` is None when ``user/get`` no longer finds the user there;
    ``info_differs``: the user's user_info is not the same in every group read."""

    group_id: str
    user_id: str
    face_tokens: tuple[str, ...]
    user_info: str | None
    info_differs: bool = False


@dataclass(frozen=True, slots=True)
class ExportedPerson:
    """A user taken by itself, for ``people:``: the same faces and user_info in every group listed."""

    user_id: str
    group_ids: tuple[str, ...]
    face_tokens: tuple[str, ...]
    user_info: str | None


@dataclass(frozen=True, slots=True)
class ExportStats:
    groups: int = 0
    users: int = 0
    faces: int = 0
    info_left_out: tuple[str, ...] = ()  # user_ids whose user_info differs between groups


# -- reading ------------------------------------------------------------------------------------------


def library_groups(library: FaceLibrary, groups: Sequence[str] = ()) -> list[str]:
    """The group ids to read, in library order: ``groups`` (each must exist) or every group."""
    existing = [group_id for group_id in iter_group_ids(library) if not is_own_group(group_id)]
    if not groups:
        return existing
    missing = sorted(set(groups) - set(existing))
    if missing:
        raise ConfigError(f"--group {', '.join(missing)}: no such group in {library.identity}",
                          hint="list groups with: facesync export (without --group)")
    wanted = set(groups)
    return [group_id for group_id in existing if group_id in wanted]


def read_library(library: FaceLibrary, group_ids: Sequence[str], *, concurrency: int = 8,
                 window: int | None = None, bar: progress_bars.Progress | None = None
                 ) -> Iterator[ExportedGroup | ExportedUser]:
    """Each group of ``group_ids`` followed by its users, in library order, read concurrently."""
    bar = bar or progress_bars.Progress()
    workers = max(1, concurrency)
    limit = max(2, window or workers * WINDOW_PER_WORKER)
    exported = frozenset(group_ids)
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export")
    memberships = _Memberships(library, pool, exported)
    pending: deque = deque()
    try:
        for group_id in group_ids:
            pending.append(ExportedGroup(group_id))
            for user_id in _user_ids(library, group_id):
                bar.add_total(1)
                faces = pool.submit(read_faces, library, group_id, user_id)
                pending.append((group_id, user_id, faces, memberships.future(user_id)))
                while len(pending) >= limit:
                    yield from _finish(pending.popleft(), memberships, exported, bar)
        while pending:
            yield from _finish(pending.popleft(), memberships, exported, bar)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _finish(item, memberships: _Memberships, exported: frozenset[str], bar: progress_bars.Progress
            ) -> Iterator[ExportedGroup | ExportedUser]:
    if isinstance(item, ExportedGroup):
        yield item
        return
    group_id, user_id, faces_future, info_future = item
    faces = faces_future.result()
    infos = info_future.result()
    memberships.written(group_id, user_id, infos)
    bar.advance()
    if not faces:  # gone since group/getusers listed it
        return
    infos = infos or {}
    shared = {info for gid, info in infos.items() if gid in exported}
    yield ExportedUser(group_id, user_id, faces, infos.get(group_id), len(shared) > 1)


class _Memberships:
    """``user/get @ALL`` once per user_id, kept only until the user is written in every group it is in.

    Used from the reading thread only; the calls themselves run on the pool.
    """

    def __init__(self, library: FaceLibrary, pool: ThreadPoolExecutor, exported: frozenset[str]):
        self._library = library
        self._pool = pool
        self._exported = exported
        self._entries: dict[str, tuple[Future, set[str] | None]] = {}

    def future(self, user_id: str) -> Future:
        entry = self._entries.get(user_id)
        if entry is None:
            entry = (self._pool.submit(read_memberships, self._library, user_id), None)
            self._entries[user_id] = entry
        return entry[0]

    def written(self, group_id: str, user_id: str, infos: dict[str, str] | None) -> None:
        entry = self._entries.get(user_id)
        if entry is None:
            return
        future, remaining = entry
        if remaining is None:
            remaining = set(infos or ()) & self._exported
            self._entries[user_id] = (future, remaining)
        remaining.discard(group_id)
        if not remaining:
            del self._entries[user_id]


def _user_ids(library: FaceLibrary, group_id: str) -> Iterator[str]:
    try:
        yield from iter_user_ids(library, group_id)
    except GroupNotFoundError:  # deleted while being read: what was listed stands
        log.warning("group %s was deleted while being read", group_id)


# -- writing ------------------------------------------------------------------------------------------


def quoted(text: str) -> str:
    """``text`` as a YAML double-quoted scalar on one line (every character escaped as YAML needs)."""
    return yaml.safe_dump(text, default_style='"', allow_unicode=True, width=2**30).rstrip("\n")


def key(text: str) -> str:
    """An id as a mapping key: plain when no YAML reader could take it for anything but text."""
    if _PLAIN_KEY.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    return quoted(text)


def header_lines(identity: str, taken_at: str, groups: Sequence[str] = ()) -> list[str]:
    scope = f" (groups: {', '.join(groups)})" if groups else ""
    return [
        f"# Exported by facesync export from {identity}{scope} at {taken_at}.",
        "# Every user's user_info is managed and every face is listed by its face_token, so",
        "# `facesync plan` of this file against the same library shows no changes.",
    ]


def write_manifest(events: Iterable[ExportedGroup | ExportedUser], out: TextIO, *, target: str | None,
                   header: Sequence[str], fragment: bool = False,
                   people: Sequence[ExportedPerson] = ()) -> ExportStats:
    """Write the manifest of ``events`` to ``out`` as they come; returns what was written.

    ``fragment``: no ``version:`` and no ``target:``, what ``include:`` takes; ``people``: single users.
    """
    out.writelines(line.rstrip("\n") + "\n" for line in header)
    if not fragment:
        out.write("version: 1\n")
    if target and not fragment:
        out.write(f"target: {quoted(target)}\n")
    groups = users = faces = 0
    left_out: list[str] = []
    open_group = False  # a group header was written and no user yet
    for event in events:
        if isinstance(event, ExportedGroup):
            if groups == 0:
                out.write("groups:\n")
            elif open_group:
                out.write("    users: {}\n")
            out.write(f"  {key(event.group_id)}:\n")
            groups += 1
            open_group = True
            continue
        if open_group:
            out.write("    users:\n")
            open_group = False
        users += 1
        faces += len(event.face_tokens)
        out.write(f"      {key(event.user_id)}:\n")
        if event.info_differs:
            out.write("        # user_info differs between groups of the library: left unmanaged here\n")
            if event.user_id not in left_out:
                left_out.append(event.user_id)
        elif event.user_info is not None:
            out.write(f"        user_info: {quoted(event.user_info)}\n")
        out.write("        images:\n")
        out.writelines(f"          - face_token: {quoted(token)}\n" for token in event.face_tokens)
    if groups == 0 and not people:
        out.write("groups: {}\n")
    elif open_group:
        out.write("    users: {}\n")
    if people:
        out.write("people:\n")
    for person in people:
        users += 1
        faces += len(person.face_tokens) * len(person.group_ids)
        out.write(f"  {key(person.user_id)}:\n")
        out.write(f"    groups: [{', '.join(key(group_id) for group_id in person.group_ids)}]\n")
        if person.user_info is not None:
            out.write(f"    user_info: {quoted(person.user_info)}\n")
        out.write("    images:\n")
        out.writelines(f"      - face_token: {quoted(token)}\n" for token in person.face_tokens)
    out.write(f"# {counted(groups, 'group')}, {counted(users, 'user')}, {counted(faces, 'face')}\n")
    return ExportStats(groups, users, faces, tuple(left_out))


def parse_user_ref(text: str) -> tuple[str, str]:
    """"GROUP/USER" as (group_id, user_id)."""
    group_id, slash, user_id = text.partition("/")
    if not slash or not group_id or not user_id:
        raise ConfigError(f"--user {text!r}: expected GROUP/USER", hint="for example --user staff/alice")
    return group_id, user_id


def read_people(library: FaceLibrary, refs: Sequence[tuple[str, str]]) -> list[ExportedPerson]:
    """One person per user_id of ``refs``, in the order first asked, with the groups asked for it."""
    wanted: dict[str, list[str]] = {}
    for group_id, user_id in refs:
        if group_id not in wanted.setdefault(user_id, []):
            wanted[user_id].append(group_id)
    people = []
    for user_id, group_ids in wanted.items():
        infos = read_memberships(library, user_id) or {}
        faces = {group_id: read_faces(library, group_id, user_id) for group_id in group_ids}
        missing = [group_id for group_id in group_ids if not faces[group_id] or group_id not in infos]
        if missing:
            raise ConfigError(f"--user: no user {user_id} in group {', '.join(missing)} of {library.identity}",
                              hint="list a group's users with: facesync export --group GROUP")
        shapes = {(frozenset(faces[group_id]), infos[group_id]) for group_id in group_ids}
        if len(shapes) > 1:
            raise ConfigError(f"--user: {user_id} has other faces or user_info in {', '.join(group_ids)}; a "
                              "person in a manifest has one list of images and one user_info",
                              hint="export those groups whole with --group, or ask for the user in one group")
        first = group_ids[0]
        people.append(ExportedPerson(user_id, tuple(group_ids), faces[first], infos[first]))
    return people


def export_fragment(library: FaceLibrary, out: TextIO, *, groups: Sequence[str] = (),
                    users: Sequence[str] = (), concurrency: int = 8, progress: bool | None = None,
                    taken_at: str | None = None) -> ExportStats:
    """Write a fragment for ``include:``: ``groups`` whole under ``groups:``, ``users`` under ``people:``."""
    refs = [ref for ref in map(parse_user_ref, users) if ref[0] not in groups]  # a whole group has them
    taken_at = taken_at or utc_now()
    header = [f"# Exported by facesync export from {library.identity} at {taken_at}: a fragment for the",
              "# include: of a manifest that defines the groups its people: join. Every user's user_info",
              "# is managed and every face is listed by face_token, so planning shows no changes for them."]
    with progress_bars.progress("Exporting the library", enabled=progress) as bar:
        people = read_people(library, refs)
        group_ids = library_groups(library, groups) if groups else []
        events = read_library(library, group_ids, concurrency=concurrency, bar=bar)
        try:
            return write_manifest(events, out, target=None, header=header, fragment=True, people=people)
        finally:
            events.close()


def export_manifest(library: FaceLibrary, out: TextIO, *, target: str | None = None,
                    groups: Sequence[str] = (), concurrency: int = 8, window: int | None = None,
                    progress: bool | None = None, taken_at: str | None = None) -> ExportStats:
    """Read ``library`` (or its ``groups``) and write it to ``out`` as a manifest."""
    taken_at = taken_at or utc_now()
    with progress_bars.progress("Exporting the library", enabled=progress) as bar:
        group_ids = library_groups(library, groups)
        events = read_library(library, group_ids, concurrency=concurrency, window=window, bar=bar)
        try:
            stats = write_manifest(events, out, target=target,
                                   header=header_lines(library.identity, taken_at, groups))
        finally:
            events.close()
    if stats.info_left_out:
        shown = ", ".join(stats.info_left_out[:10]) + (" ..." if len(stats.info_left_out) > 10 else "")
        log.warning("%s a different user_info in different groups; a manifest gives a person one "
                    "user_info, so theirs is left unmanaged: %s",
                    counted(len(stats.info_left_out), "user") + (" has" if len(stats.info_left_out) == 1 else " have"),
                    shown)
    return stats


