"""What a plan does to each group and user, replayed from its operations and the live facts (``expects``)
they were planned on. Pure; shared by the views (what a reviewer reads, the summary counts) and by
``apply PLAN.json``, which recounts the deletes from the operations instead of trusting the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from facesync.model import ImageKind, is_stage_group
from facesync.plan.ops import FaceSource, Operation, OpKind, Plan

Structure = dict[str, dict[str | None, list[Operation]]]


def face_key(face: FaceSource) -> str:
    return face.face_token or face.source


def structure(plan: Plan) -> Structure:
    """Operations by group, then by user (None first: the group's own), both sorted by name as Terraform
    sorts addresses; within a user, in execution order."""
    groups: Structure = {}
    for op in plan.operations:
        groups.setdefault(op.group_id, {}).setdefault(op.user_id, []).append(op)
    return {
        group_id: {user_id: users[user_id] for user_id in sorted(users, key=_user_order)}
        for group_id, users in sorted(groups.items())
    }


def _user_order(user_id: str | None) -> tuple[bool, str]:
    return user_id is not None, user_id or ""


def _user_before(ops: list[Operation]) -> tuple[bool, tuple[str, ...] | None, str | None]:
    """The live user the operations were planned on: (exists, face_tokens or None, user_info or None)."""
    for op in ops:
        for expect in op.expects:
            if expect.group_id == op.group_id and expect.user_id == op.user_id:
                return expect.exists, expect.face_tokens, expect.user_info
    return False, None, None


@dataclass(frozen=True, slots=True)
class UserEffect:
    """``added``/``removed``: face keys (face_token, or the source of an upload whose token is unknown);
    ``readded``: faces the user keeps but that an update drops and an add puts back (mechanics only)."""

    exists: bool
    before: tuple[str, ...] | None
    added: tuple[str, ...]
    removed: tuple[str, ...]
    readded: frozenset[str]
    info_old: str | None
    info_new: str | None
    updated: bool
    deleted: bool

    @property
    def info_changed(self) -> bool:
        return self.info_new is not None and self.info_new != self.info_old

    @property
    def replaced_all(self) -> bool:
        """Every face replaced: an update with a new image, nothing of before kept."""
        return self.updated and not self.readded and bool(self.removed)


def user_effect(ops: list[Operation]) -> UserEffect:
    """What the operations of one (group, user) do to it, from the live facts they were planned on."""
    exists, before_tokens, info_old = _user_before(ops)
    before = list(before_tokens or ())
    before_set = set(before)
    after = set(before_set)
    readded: set[str] = set()
    info_new = None
    updated = deleted = False
    for op in ops:
        if op.kind is OpKind.UPDATE_USER:
            updated = True
            after = {face_key(op.face)}
        elif op.kind is OpKind.ADD_FACE:
            key = face_key(op.face)
            if key in before_set and op.face.kind is ImageKind.FACE_TOKEN:
                readded.add(key)
            after.add(key)
        elif op.kind is OpKind.DELETE_FACE:
            after.discard(op.face_token)
        elif op.kind is OpKind.DELETE_USER:
            deleted = True
        if op.user_info is not None:
            info_new = op.user_info
    if updated:
        readded |= after & before_set
    added = tuple(sorted(after - before_set))
    removed = tuple(token for token in sorted(before_set) if token not in after)
    return UserEffect(exists, before_tokens, added, removed, frozenset(readded), info_old, info_new, updated,
                      deleted)


def deletes(plan: Plan) -> int:
    """Records the plan destroys, counted as the planner's safety check counts them: a group or a user
    deleted is one, and so is each face a kept user loses (by face/delete or dropped by an update)."""
    count = 0
    for group_id, users in structure(plan).items():
        if is_stage_group(group_id):  # facesync's own, made and removed by the same plan
            continue
        for user_id, ops in users.items():
            if user_id is None:
                count += sum(op.kind is OpKind.DELETE_GROUP for op in ops)
                continue
            effect = user_effect(ops)
            count += 1 if effect.deleted else len(effect.removed)
    return count
