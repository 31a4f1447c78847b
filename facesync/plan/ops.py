"""The operations a plan is made of, and the plan itself.

Each operation is exactly one API call. The planner emits them in execution order
(CreateGroup → AddFace / UpdateUser / CopyUser → DeleteFace → DeleteUser → DeleteGroup) and names, for
each, the operations it must wait for (``after``) and the live facts it was planned on (``expects``),
so that a saved plan can be checked against the library before it is applied.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from facesync.api.protocol import NO_CONTROL, Endpoint
from facesync.errors import PlanRefusedError
from facesync.model import ImageKind, is_lock_group


class OpKind(str, Enum):
    """What an operation does; each kind is one endpoint's call (``endpoint``)."""

    CREATE_GROUP = "create_group"
    ADD_FACE = "add_face"
    UPDATE_USER = "update_user"
    COPY_USER = "copy_user"
    DELETE_FACE = "delete_face"
    DELETE_USER = "delete_user"
    DELETE_GROUP = "delete_group"

    @property
    def endpoint(self) -> str:
        return _ENDPOINTS[self]

    @property
    def phase(self) -> int:
        """Position in the global order; operations of a lower phase never wait on a higher one."""
        return _PHASES[self]

    @property
    def is_delete(self) -> bool:
        return self in (OpKind.DELETE_FACE, OpKind.DELETE_USER, OpKind.DELETE_GROUP)


_ENDPOINTS = {
    OpKind.CREATE_GROUP: Endpoint.GROUP_ADD,
    OpKind.ADD_FACE: Endpoint.USER_ADD,
    OpKind.UPDATE_USER: Endpoint.USER_UPDATE,
    OpKind.COPY_USER: Endpoint.USER_COPY,
    OpKind.DELETE_FACE: Endpoint.FACE_DELETE,
    OpKind.DELETE_USER: Endpoint.USER_DELETE,
    OpKind.DELETE_GROUP: Endpoint.GROUP_DELETE,
}
_PHASES = {
    OpKind.CREATE_GROUP: 0,
    OpKind.ADD_FACE: 1,
    OpKind.UPDATE_USER: 1,
    OpKind.COPY_USER: 1,
    OpKind.DELETE_FACE: 2,
    OpKind.DELETE_USER: 3,
    OpKind.DELETE_GROUP: 4,
}


@dataclass(frozen=True, slots=True)
class FaceSource:
    """What an add or an update sends.

    FILE: the bytes at ``path`` (``source`` is the path relative to the manifest's folder, shown to people
    and saved in plan files); URL: ``source``; FACE_TOKEN: ``face_token``. ``face_token`` is also set for
    FILE/URL sources whose token is known (resolved), so the executor can verify the result and a re-run
    can recognise the face. ``sha256``: for FILE, the content that was planned (and reviewed); the
    executor refuses to upload other bytes.
    """

    kind: ImageKind
    source: str
    path: str | None = None
    face_token: str | None = None
    sha256: str | None = None


@dataclass(frozen=True, slots=True)
class Expect:
    """A live fact an operation was planned on. ``exists`` of the group (user_id None) or the user;
    ``face_tokens`` (sorted) and ``user_info`` are checked only when not None."""

    group_id: str
    user_id: str | None
    exists: bool
    face_tokens: tuple[str, ...] | None = None
    user_info: str | None = None


@dataclass(frozen=True, slots=True)
class Operation:
    """One API call of a plan, with what it waits for (``after``) and the live facts it was planned on
    (``expects``), so that a saved plan can be checked against the library before it runs."""

    kind: OpKind
    group_id: str
    user_id: str | None = None
    face: FaceSource | None = None  # ADD_FACE, UPDATE_USER
    face_token: str | None = None  # DELETE_FACE
    user_info: str | None = None  # ADD_FACE, UPDATE_USER: sent when not None
    src_group_id: str | None = None  # COPY_USER
    quality_control: str = NO_CONTROL
    liveness_control: str = NO_CONTROL
    after: tuple[int, ...] = ()  # indexes in Plan.operations that must succeed first
    expects: tuple[Expect, ...] = ()
    reason: str = ""  # why the planner chose this, in a few words, for the reader

    calls = 1  # every operation is one API call

    @property
    def key(self) -> str:
        """A stable identity, unique within a plan, for reports and for matching a re-run."""
        subject = self.face_token or (self.face and (self.face.face_token or self.face.source)) or ""
        parts = [self.kind.value, self.group_id, self.user_id or "", self.src_group_id or "", subject]
        return ":".join(parts)


@dataclass(frozen=True, slots=True)
class Safety:
    """The delete-threshold and protection checks, evaluated by the planner and shown in the plan."""

    existing: int = 0  # users (+ groups) in scope before the plan
    deleting: int = 0  # of those, how many the plan deletes
    max_share: float = 0.3
    threshold_min: int = 10
    reasons: tuple[str, ...] = ()  # why the plan is unsafe; empty when safe
    forced: bool = False  # planned with --force: unsafe reasons are shown but do not stop apply

    @property
    def unsafe(self) -> bool:
        return bool(self.reasons)


@dataclass(frozen=True, slots=True)
class Plan:
    """The ordered calls that make a library match a manifest, for the library ``target`` names.

    Made by ``Session.plan``; saved and loaded as JSON (``plan --out``, ``load_plan_file``); rendered as
    text, JSON or Markdown. ``refusal()`` says whether ``apply`` may run it."""

    operations: tuple[Operation, ...]
    target: str
    manifest_digest: str = ""
    safety: Safety = Safety()
    live_source: str = "refresh"  # or "snapshot FILE taken at ..."
    created_at: str = ""  # ISO 8601, UTC
    notes: tuple[str, ...] = field(default=())  # what the reader should know: skipped groups, etc.
    qps: float | None = None  # the rate the time estimate assumes (None: no limit, no estimate)
    protected_groups: tuple[str, ...] = ()  # the policy's protected groups: apply refuses to delete them
    manifest: str = ""  # the manifest file, relative to the checkout (or folder) it was planned in
    planned_in: str = ""  # that checkout (or folder), absolute: found again there only if it still holds it
    commit: str = ""  # the git commit of that checkout, when it was one
    face_names: Mapping[str, str] = field(default_factory=dict)  # face_token -> how people know that face
    # what an incremental refresh trusted (users_read, users_from_state, audited, oldest_verified_at);
    # None after a full refresh or from a snapshot. ``live_source`` says the same in words.
    refresh: Mapping[str, object] | None = None
    # (group_id, user_id) of each user whose faces the plan replaces although the manifest's images for it
    # have tokens only ``detect`` answered: where detect and user/add disagree, those are the same pictures
    # (plan/matching.py). ``reupload``: replacing them was asked for (``--reupload``); else apply checks
    # the service before its first write.
    replaced_by_detect: tuple[tuple[str, str], ...] = ()
    reupload: bool = False

    @property
    def calls(self) -> int:
        return sum(op.calls for op in self.operations)

    @property
    def empty(self) -> bool:
        return not self.operations

    def estimated_seconds(self, qps: float | None) -> float | None:
        """Time the calls take at ``qps`` (None: no limit, no estimate)."""
        return self.calls / qps if qps else None

    def refusal(self, protected_groups: Iterable[str] = (), *, threshold: bool = True) -> PlanRefusedError | None:
        """Why this plan must not be applied, or None: the one safety rule, for plan, apply and the executor.

        Deleting more than the policy's share of what exists is refused unless the plan's safety was
        counted with force (``plan --force``, or ``apply --force`` counting it again); ``threshold=False``
        leaves that check to the caller. Deleting a protected group (the plan's, plus
        ``protected_groups``) or touching facesync's lock group is refused whatever force says."""
        if threshold and self.safety.unsafe and not self.safety.forced:
            return PlanRefusedError(
                "refusing an unsafe plan: " + "; ".join(self.safety.reasons),
                hint="check that the manifest is complete; if these deletions are wanted, pass --force",
            )
        protected = set(protected_groups) | set(self.protected_groups)
        reasons = []
        for op in self.operations:
            if op.kind is OpKind.DELETE_GROUP and op.group_id in protected:
                reasons.append(f"the plan deletes the protected group {op.group_id}")
            for group_id in (op.group_id, op.src_group_id):
                if group_id and is_lock_group(group_id):
                    reasons.append(f"the plan touches facesync's lock group {group_id} ({op.kind.value})")
        if reasons:
            return PlanRefusedError(
                "refusing to apply: " + "; ".join(reasons),
                hint="protected groups are never deleted; remove the group from the protected list first",
            )
        return None
