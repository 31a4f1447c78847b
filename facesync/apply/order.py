"""The order operations run in: the plan's ``after`` plus the executor's own safety rules (pure).

Every rule only ever points at an EARLIER operation of the plan, so the graph cannot have a cycle:
the group's CreateGroup first; within one (group, user) the first add/update/copy goes alone (it
creates the user, or an update replaces every face), the other adds follow in parallel; a user's
deletes wait for all of that user's earlier work (make before break) and for every earlier add that
re-uses a face_token they remove (a FACE_TOKEN may stop working once no user holds its face), and a
delete whose faces the plan does not know (a group, an unread user) waits for every add by face_token;
a copy waits for its source user to converge; a DeleteGroup waits for
everything in that group. There is no global barrier between phases, so the pool stays busy.
"""

from __future__ import annotations

from facesync.model import ImageKind
from facesync.plan.ops import Operation, OpKind, Plan

WRITES = (OpKind.ADD_FACE, OpKind.UPDATE_USER, OpKind.COPY_USER)


def subject_of(op: Operation) -> tuple[str, str] | None:
    return (op.group_id, op.user_id) if op.user_id is not None else None


def dependencies(plan: Plan) -> tuple[frozenset[int], ...]:
    """For each operation, the indexes it must wait for: ``after`` plus the executor's own safety rules."""
    ops = plan.operations
    creates: dict[str, int] = {}
    by_user: dict[tuple[str, str], list[int]] = {}
    first_write: dict[tuple[str, str], int] = {}
    updates: dict[tuple[str, str], list[int]] = {}
    by_group: dict[str, list[int]] = {}
    token_adds: dict[str, list[int]] = {}
    deps: list[frozenset[int]] = []

    for i, op in enumerate(ops):
        need = {j for j in op.after if j != i and 0 <= j < len(ops)}
        groups = {op.group_id} | ({op.src_group_id} if op.src_group_id else set())
        need.update(creates[g] for g in groups if g in creates)
        subject = subject_of(op)
        if op.kind in WRITES and subject is not None:
            if subject in first_write:
                need.add(first_write[subject])
            need.update(updates.get(subject, ()))
        if op.kind is OpKind.COPY_USER and op.src_group_id and op.user_id is not None:
            need.update(by_user.get((op.src_group_id, op.user_id), ()))
        if op.kind in (OpKind.DELETE_FACE, OpKind.DELETE_USER) and subject is not None:
            need.update(by_user.get(subject, ()))
        if op.kind.is_delete:
            removed = _tokens_removed(op)
            if removed is None:  # faces not known: any of them may be what an add by token needs alive
                need.update(i for adds in token_adds.values() for i in adds)
            for token in removed or ():
                need.update(token_adds.get(token, ()))
        if op.kind is OpKind.DELETE_GROUP:
            need.update(by_group.get(op.group_id, ()))
        need.discard(i)
        deps.append(frozenset(need))

        if op.kind is OpKind.CREATE_GROUP:
            creates.setdefault(op.group_id, i)
        for g in groups:
            by_group.setdefault(g, []).append(i)
        if subject is not None:
            by_user.setdefault(subject, []).append(i)
            if op.kind in WRITES:
                first_write.setdefault(subject, i)
            if op.kind is OpKind.UPDATE_USER:
                updates.setdefault(subject, []).append(i)
        if op.kind is OpKind.COPY_USER and op.src_group_id and op.user_id is not None:
            by_user.setdefault((op.src_group_id, op.user_id), []).append(i)
        if op.face is not None and op.face.kind is ImageKind.FACE_TOKEN and op.face.face_token:
            token_adds.setdefault(op.face.face_token, []).append(i)
    return tuple(deps)


def _tokens_removed(op: Operation) -> tuple[str, ...] | None:
    """The faces a delete takes out of the library, or None when the plan does not know them (a group, a
    user whose faces were not read)."""
    if op.kind is OpKind.DELETE_FACE:
        return (op.face_token,) if op.face_token else ()
    if op.kind is OpKind.DELETE_GROUP:
        return None
    for expect in op.expects:
        if (expect.group_id, expect.user_id) == subject_of(op) and expect.face_tokens is not None:
            return expect.face_tokens
    return None
