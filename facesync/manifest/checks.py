"""Semantic checks: what JSON Schema cannot say, as pure functions from expanded entries to diagnostics.

Ids follow the API's rules (charset, byte lengths, the reserved lock group); one person has one
user_info everywhere; a user appears once per group with at most 20 faces (Baidu refuses the 21st).
A user_id is held to 48 bytes although user/add takes 128: every other endpoint (update, get, copy,
delete) takes only 48, so a longer user could be created but never managed. Warnings flag what works
but is probably a mistake: groups with no users (prune would empty them), and one photo on two users of a
group (Baidu may refuse the second add with 223105, "face is already exist", on every run).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from facesync.api.protocol import (
    GROUP_ID_MAX_BYTES,
    ID_PATTERN,
    MAX_FACES_PER_USER,
    USER_ID_MAX_BYTES,
    USER_INFO_MAX_BYTES,
)
from facesync.manifest.diagnostics import Diagnostic, error, warning
from facesync.manifest.loader import format_path
from facesync.model import (
    LOCK_GROUP_PREFIX,
    OWN_GROUP_PREFIX,
    PROBE_GROUP_PREFIX,
    STAGE_GROUP_PREFIX,
    DesiredImage,
    Origin,
    is_own_group,
)
from facesync.words import counted


@dataclass(slots=True)
class Entry:
    """One user of one group, as the manifest wrote it (a group's users, a person, or a folder).

    ``where`` is the key path as steps (formatted only when a diagnostic needs it) or as text.
    """

    group_id: str
    user_id: str
    user_info: str | None
    images: list[DesiredImage]
    quality_control: str | None
    liveness_control: str | None
    origin: Origin
    where: tuple | str

    @property
    def path(self) -> str:
        return self.where if isinstance(self.where, str) else format_path(self.where)


@dataclass(frozen=True)
class GroupDecl:
    group_id: str
    prune: bool | None
    protected: bool
    origin: Origin
    path: str


def group_id_problems(group_id: str, origin: Origin, path: str) -> list[Diagnostic]:
    if not ID_PATTERN.fullmatch(group_id):
        return _invalid_id("group", group_id, "staff", origin, path)
    size = len(group_id.encode())
    if size > GROUP_ID_MAX_BYTES:
        return [error(origin, path, f"group_id {group_id!r} is {size} bytes long; the limit is {GROUP_ID_MAX_BYTES}")]
    if is_own_group(group_id):
        return [error(origin, path, f"group_id {group_id!r} is reserved for facesync's own groups",
                      f"ids starting with '{OWN_GROUP_PREFIX}' (the apply lock's '{LOCK_GROUP_PREFIX}...', the"
                      f" staging groups' '{STAGE_GROUP_PREFIX}...', apply's probe '{PROBE_GROUP_PREFIX}...') are"
                      " reserved: choose another name")]
    return []


def user_id_is_plain(user_id: str) -> bool:
    """True when ``user_id_problems`` certainly finds nothing: the common case, without building messages."""
    return len(user_id) <= USER_ID_MAX_BYTES and ID_PATTERN.fullmatch(user_id) is not None


def user_info_fits(user_info: str | None) -> bool:
    """True when ``user_info_problems`` finds nothing."""
    return user_info is None or len(user_info) * 4 <= USER_INFO_MAX_BYTES or len(user_info.encode("utf-8")) <= USER_INFO_MAX_BYTES


def user_id_problems(user_id: str, origin: Origin, path: str) -> list[Diagnostic]:
    if not ID_PATTERN.fullmatch(user_id):
        return _invalid_id("user", user_id, "user1", origin, path)
    size = len(user_id.encode())
    if size > USER_ID_MAX_BYTES:
        return [error(origin, path, f"user_id {user_id[:20]!r}... is {size} bytes long; the limit is "
                      f"{USER_ID_MAX_BYTES}",
                      "user/add would take it, but user/update, user/get, user/copy and the deletes refuse "
                      "it: such a user could never be changed or removed; shorten it")]
    return []


def _invalid_id(what: str, value: str, example: str, origin: Origin, path: str) -> list[Diagnostic]:
    """A group_id or user_id with characters the contract refuses, and a name with each replaced by _."""
    plain = "".join(char if ID_PATTERN.fullmatch(char) else "_" for char in value) or example
    return [error(origin, path, f"invalid {what}_id {value!r}: only A-Z, a-z, 0-9 and _ are allowed",
                  f"rename the {what}, e.g. {plain!r}")]


def user_info_problems(user_info: str | None, origin: Origin, path: str) -> list[Diagnostic]:
    if user_info is None:
        return []
    size = len(user_info.encode("utf-8"))
    if size > USER_INFO_MAX_BYTES:
        return [error(origin, path, f"user_info is {size} bytes (UTF-8); the limit is {USER_INFO_MAX_BYTES}",
                      "shorten it; keep long details elsewhere and store a key here")]
    return []


def entry_problems(entries: Iterable[Entry], groups: dict[str, GroupDecl], *, groups_known: bool = True,
                   warn_empty: bool = True) -> list[Diagnostic]:
    """Cross-entry checks: unknown groups, a user twice in a group, conflicting user_info, faces.

    ``groups_known=False``: some ``groups:`` could not be read, so a group not found is not reported;
    ``warn_empty=False``: users may be missing, so no group is called empty."""
    found: list[Diagnostic] = []
    seen: dict[tuple[str, str], Entry] = {}
    info_of: dict[str, Entry] = {}
    populated: set[str] = set()
    first_of: dict[tuple[str, str], tuple[Entry, DesiredImage]] = {}  # (group, image) -> its first user
    shared: dict[tuple[str, str], list] = {}  # (group, image) -> [second user, its image, users listing it]
    for entry in entries:
        if entry.group_id not in groups:
            if not groups_known:
                continue
            found.append(error(entry.origin, entry.path,
                               f"group '{entry.group_id}' is not defined under groups",
                               _suggest(entry.group_id, groups) or "add it under groups: (it may be empty)"))
            continue
        populated.add(entry.group_id)
        key = (entry.group_id, entry.user_id)
        first = seen.get(key)
        if first is not None:
            found.append(error(entry.origin, entry.path,
                               f"user '{entry.user_id}' is listed twice in group '{entry.group_id}' "
                               f"(first at {first.origin})", "list each user once per group"))
            continue
        seen[key] = entry
        if entry.user_info is not None:
            other = info_of.setdefault(entry.user_id, entry)
            if other is not entry and other.user_info != entry.user_info:
                found.append(error(entry.origin, entry.path,
                                   f"conflicting user_info for user '{entry.user_id}': {entry.user_info!r} here, "
                                   f"{other.user_info!r} at {other.origin}",
                                   "one person has one user_info: list them once under people: with groups: [...]"))
        if len(entry.images) > MAX_FACES_PER_USER:
            found.append(error(entry.origin, entry.path,
                               f"user '{entry.user_id}' has {len(entry.images)} faces; Baidu accepts at most "
                               f"{MAX_FACES_PER_USER} per user in a group",
                               f"keep the best {MAX_FACES_PER_USER}"))
        for image in entry.images:
            face_key = (entry.group_id, image.sha256 or image.path or f"{image.kind.value}:{image.source}")
            if first_of.setdefault(face_key, (entry, image))[0] is not entry:
                shared.setdefault(face_key, [entry, image, 1])[2] += 1
    found.extend(_shared_face_warnings(first_of, shared))
    for group in groups.values() if warn_empty else ():
        if group.group_id not in populated:
            found.append(warning(group.origin, group.path, f"group '{group.group_id}' has no users",
                                 "with prune on, apply removes every user the library has in it"))
    return found


def _shared_face_warnings(first_of: dict[tuple[str, str], tuple[Entry, DesiredImage]],
                          shared: dict[tuple[str, str], list]) -> list[Diagnostic]:
    """One warning per photo listed for several users of a group, at its second listing (a placeholder
    photo on thousands of users is one mistake, not thousands)."""
    found = []
    for key, (second, image, users) in shared.items():
        first, first_image = first_of[key]
        others = f" and {counted(users - 2, 'other user')}" if users > 2 else ""
        found.append(warning(image.origin or second.origin, second.path,
                             f"image {image.source!r} is listed for users '{first.user_id}' "
                             f"({first_image.origin or first.origin}) and '{second.user_id}'{others} of group "
                             f"'{key[0]}': Baidu may refuse the same face on two users of one group",
                             "keep each photo on one user per group; if Baidu refuses it (223105), "
                             "apply fails the same way on every run until only one user lists it"))
    return found


def _suggest(word: str, choices) -> str | None:
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"did you mean '{close[0]}'?" if close else None
