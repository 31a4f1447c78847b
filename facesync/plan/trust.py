"""What ``apply PLAN.json`` works out again instead of believing the file.

A plan file's checksum shows that it was not changed after it was written, not who wrote it: anyone can
edit a plan and compute the checksum again. So apply takes from the file only what it cannot know
otherwise (the operations, and the live facts they were planned on, which it checks against the
library), and recomputes the rest:

- Safety: the deletes are counted from the operations (``effects.deletes``) and what exists is read
  from the library, as the planner counts them: every user of the groups the plan touches (and of the
  manifest's groups, when the manifest is there) is one, plus the faces of the users the manifest names
  (without it: of the users the plan changes): from the facts checked against the library for users
  the plan touches, from the manifest's images for the others. This equals the planner's count, except
  in a group that does not prune, where a user left alone may hold more faces than the manifest lists:
  there it is lower, so never less strict; reading every face would cost a call per user. The limits
  come from the manifest's policy when it is there, else from the file. The plan is unsafe when this
  count says so or when the file says so; ``--force`` given to apply is the only way past it (the
  file's ``forced`` is not read).
- Protected groups: the manifest's, when it is there, together with the file's: never fewer than the
  plan's own.
- Image files: only inside the manifest's folder, with the content that was planned (``uploads.py``).
- The target: the plan's own only when it is local or Baidu; another server must be chosen outside the
  file (``commands/apply.py``), so an edited plan cannot collect the credentials.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor

from facesync.api.protocol import FaceLibrary, iter_group_ids, iter_user_ids
from facesync.model import Desired, is_stage_group
from facesync.plan.effects import deletes
from facesync.plan.ops import OpKind, Plan, Safety


def scope_groups(plan: Plan, desired: Desired | None) -> tuple[str, ...]:
    """The groups whose users count as "in scope": those the plan changes (not deletes) and the manifest's."""
    deleted = {op.group_id for op in plan.operations if op.kind is OpKind.DELETE_GROUP}
    touched = {op.group_id for op in plan.operations} - deleted
    listed = {group.group_id for group in desired.groups} if desired is not None else set()
    return tuple(sorted(touched | listed))


def read_scope(plan: Plan, desired: Desired | None, library: FaceLibrary, *, concurrency: int = 8
               ) -> dict[str, tuple[str, ...]]:
    """group -> its users in the library, for every scope group that exists (one list call per 1000)."""
    present = set(iter_group_ids(library))
    groups = [group_id for group_id in scope_groups(plan, desired) if group_id in present]
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        users = list(pool.map(lambda group_id: tuple(iter_user_ids(library, group_id)), groups))
    return dict(zip(groups, users, strict=True))


def count_existing(plan: Plan, live_users: Mapping[str, Collection[str]], desired: Desired | None) -> int:
    """Users, faces and groups in scope before the plan, by the planner's rule: a user is one, and the
    faces of a user the manifest names count too (without the manifest: of a user the plan changes)."""
    faces: dict[tuple[str, str], int] = {}
    named: set[tuple[str, str]] | None = None
    if desired is not None:
        named = set()
        for group in desired.groups:
            for user in group.users:
                named.add((group.group_id, user.user_id))
                faces[(group.group_id, user.user_id)] = len({image.face_token or image.source
                                                             for image in user.images})
    for op in plan.operations:
        subject = (op.group_id, op.user_id)
        if op.user_id is None or (named is None and op.kind is OpKind.DELETE_USER):
            continue
        for expect in op.expects:
            known = expect.exists and expect.face_tokens is not None
            if known and (expect.group_id, expect.user_id) == subject:
                faces[subject] = len(expect.face_tokens)
    existing = sum(1 for op in plan.operations if op.kind is OpKind.DELETE_GROUP and not is_stage_group(op.group_id))
    for group_id, users in live_users.items():
        existing += sum(1 + (faces.get((group_id, user_id), 0)
                             if named is None or (group_id, user_id) in named else 0) for user_id in users)
    return existing


def recount_safety(plan: Plan, live_users: Mapping[str, Collection[str]], desired: Desired | None, *,
                   force: bool) -> Safety:
    """The plan's safety, from its operations and the library; see the module's docstring."""
    if desired is not None:
        max_share, threshold_min = desired.policy.max_delete_share, desired.policy.delete_threshold_min
    else:
        max_share, threshold_min = plan.safety.max_share, plan.safety.threshold_min
    existing = count_existing(plan, live_users, desired)
    deleting = deletes(plan)
    reasons: list[str] = []
    if existing >= threshold_min and deleting > max_share * existing:
        reasons.append(f"the plan deletes {deleting} of {existing} users, faces and groups in scope "
                       f"({deleting / existing:.0%}), above the {max_share:.0%} limit")
    elif deleting and existing < deleting:  # deletes of things the library does not list: count them all
        reasons.append(f"the plan deletes {deleting} users, faces and groups where the library has "
                       f"{existing} in scope")
    if not reasons and plan.safety.unsafe:
        reasons.extend(f"{reason} (as the plan file says)" for reason in plan.safety.reasons)
    return Safety(existing=existing, deleting=deleting, max_share=max_share, threshold_min=threshold_min,
                  reasons=tuple(reasons), forced=force)


def protected_groups(plan: Plan, desired: Desired | None) -> tuple[str, ...]:
    """The groups apply must never delete: the plan's and, when it is there, the manifest's."""
    manifest = desired.policy.protected_groups if desired is not None else ()
    return tuple(sorted({*plan.protected_groups, *manifest}))
