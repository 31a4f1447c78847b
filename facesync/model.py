"""The two sides of every diff: ``Desired`` (from the manifest) and ``Live`` (from the library).

Plain frozen records, no behaviour beyond lookups: the manifest loader builds ``Desired``, ``resolve``
fills in face_tokens, ``refresh`` (or a snapshot) builds ``Live``, and the planner compares them.
``slots`` keeps a million faces within the planner's memory budget.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import Enum

from facesync.api.protocol import GROUP_ID_MAX_BYTES, NO_CONTROL


class ImageKind(str, Enum):
    FILE = "file"
    URL = "url"
    FACE_TOKEN = "face_token"


@dataclass(frozen=True, slots=True)
class Origin:
    """Where something was written in the manifest, for messages: file:line:column (1-based)."""

    file: str
    line: int
    column: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class DesiredImage:
    """One face a user should have.

    ``source`` is what the manifest said (a path relative to the manifest, a URL, or the token itself);
    ``path`` is the absolute file for FILE images; ``sha256`` is the file's content hash when known;
    ``face_token`` is known for FACE_TOKEN images and filled in by ``resolve`` for the others;
    ``detected``: that token is what ``detect`` answered, and no upload has shown it to be the token the
    library stores (they may differ: plan/matching.py).
    """

    kind: ImageKind
    source: str
    path: str | None = None
    sha256: str | None = None
    face_token: str | None = None
    origin: Origin | None = field(default=None, compare=False)
    detected: bool = False


@dataclass(frozen=True, slots=True)
class DesiredUser:
    """A user of one group. ``user_info`` None means not managed: facesync neither reads nor sets it."""

    user_id: str
    images: tuple[DesiredImage, ...]
    user_info: str | None = None
    quality_control: str = NO_CONTROL
    liveness_control: str = NO_CONTROL
    origin: Origin | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class DesiredGroup:
    """A managed group. ``prune``: remove users the manifest does not name (and faces of named users).
    ``scope_users``: set by ``plan.narrow`` (``--user``): only these users are managed; others are left
    alone, never pruned."""

    group_id: str
    users: tuple[DesiredUser, ...]
    prune: bool = True
    origin: Origin | None = field(default=None, compare=False)
    scope_users: frozenset[str] | None = None


@dataclass(frozen=True, slots=True)
class Policy:
    """Scope and safety, evaluated by the planner and shown in the plan.

    A plan deleting more than ``max_delete_share`` of what exists, once at least ``delete_threshold_min``
    things exist, is refused unless forced (octoDNS's rule). Protected groups are never deleted.
    ``delete_unlisted_groups``: groups of the library that the manifest does not name are deleted.
    ``refresh``: how plan and apply read the library when no ``--refresh`` is given (``incremental.py``).
    """

    prune: bool = True
    delete_unlisted_groups: bool = False
    max_delete_share: float = 0.3
    delete_threshold_min: int = 10
    protected_groups: frozenset[str] = frozenset()
    refresh: str = "full"


@dataclass(frozen=True, slots=True)
class Desired:
    """What the manifest wants. ``digest`` is the sha256 of the manifest's files, for plans."""

    groups: tuple[DesiredGroup, ...]
    policy: Policy = Policy()
    target: str | None = None
    manifest_path: str = ""
    digest: str = ""
    # groups of the manifest that ``--group`` left out: not managed by this plan, but not "unlisted" either
    outside_filter: tuple[str, ...] = ()
    # faces the whole manifest names by face_token, kept by ``narrow`` so a filtered plan chooses as the
    # full one does (None: read them from ``groups``)
    named_tokens: frozenset[str] | None = None

    def group(self, group_id: str) -> DesiredGroup | None:
        return next((g for g in self.groups if g.group_id == group_id), None)


@dataclass(frozen=True, slots=True)
class LiveUser:
    """A user as the library has it. None means not read: faces of a user that is only to be deleted,
    user_info of a user whose user_info is not managed."""

    user_id: str
    face_tokens: tuple[str, ...] | None
    user_info: str | None = None


@dataclass(frozen=True, slots=True)
class LiveGroup:
    group_id: str
    users: dict[str, LiveUser]


@dataclass(frozen=True, slots=True)
class Live:
    """What the library holds, within the manifest's scope.

    ``group_ids``: every group of the library (group/getlist). ``groups``: the managed groups that
    exist, with their users. ``source`` says whether this came from a refresh or a snapshot file.
    """

    group_ids: tuple[str, ...]
    groups: dict[str, LiveGroup]
    identity: str = ""
    fetched_at: float = 0.0
    source: str = "refresh"


# Every group whose id starts with this holds the apply lock (see lock.py). They are facesync's own: the
# manifest may not name them, and refresh, export, the planner and apply never read, prune or delete them.
LOCK_GROUP_PREFIX = "_facesync_lock"


def is_lock_group(group_id: str) -> bool:
    return group_id.startswith(LOCK_GROUP_PREFIX)

# Groups that hold, for the length of one apply, a copy of a user whose faces are known only by
# face_token while a user/update drops them (a FACE_TOKEN may stop working once no user holds its face).
# Like the lock group they are facesync's own: never listed, pruned or deleted as a manifest's group.
STAGE_GROUP_PREFIX = "_facesync_stage_"


def stage_group_id(group_id: str) -> str:
    """The staging group for users of ``group_id`` (one per source group: user_ids are unique in it)."""
    name = STAGE_GROUP_PREFIX + group_id
    if len(name.encode("utf-8")) <= GROUP_ID_MAX_BYTES:
        return name
    return STAGE_GROUP_PREFIX + hashlib.sha256(group_id.encode("utf-8")).hexdigest()[:24]


def is_stage_group(group_id: str) -> bool:
    return group_id.startswith(STAGE_GROUP_PREFIX)


# A group that lives for one check in apply: a single upload that shows whether the service's detect gives
# an image the face_token user/add stores (apply/probe.py). Removed at once; facesync's own like the others.
PROBE_GROUP_PREFIX = "_facesync_probe_"


# The prefix every kind shares: a manifest may name no group under it, so that no lock, staging or probe
# group can ever be a manifest's group, and a plan's delete of one is facesync's own clean-up.
OWN_GROUP_PREFIX = "_facesync_"


def is_own_group(group_id: str) -> bool:
    """A group facesync makes for itself (the lock, staging), never user data."""
    return group_id.startswith(OWN_GROUP_PREFIX)
