"""The diff: ``(Desired, Live) -> Plan``, pure and deterministic (same inputs, identical plan).

Set algebra over face_tokens, one pass over the faces, no I/O. Choices where the design is silent:

- Cost rule for a user that exists: the incremental form (adds, then face deletes) costs
  ``new + extra`` calls; the update form (``user/update`` with one face, then re-adds) costs the number
  of faces the user ends with. The cheaper wins, the incremental form on a tie. The update form is the
  only one when user_info changes and no face is added. Its single face is a kept face by FACE_TOKEN
  when there is one (no upload, cannot fail on the image), else the first new image.
- Every add sends the desired user_info (when managed): free, and whichever add creates a new user sets
  it. Adds of one new user do not wait on each other (user/add creates the user when missing).
  Re-adds of faces the user already had send quality_control/liveness_control NONE: they were accepted.
- An add to an existing user whose user_info the manifest does not manage sends back the user_info the
  library has (Baidu may clear it on an add without one): the planner needs it read, and
  ``user_info_to_read`` names the users to read (only those the plan writes to, so an in-sync library
  costs no extra call); ``make_plan`` refuses a Live that lacks it. The expect carries it, so a saved
  plan is refused when it changed since.
- ``user/update`` may reset user_info when none is sent (the contract's default is empty), so for a user
  whose user_info the manifest does not manage the update and its re-adds send back what the library
  has, as adds do. So the update form serves such users too, for instance one whose photos all match
  no face (a service whose detect answers other tokens than user/add stored): it re-uploads them and
  ends in sync, where adds first would meet 223105.
- After a ``user/update`` the other faces are re-added from the manifest's file or URL (a FACE_TOKEN may
  stop working once no user holds its face). The update itself goes by the token of a kept face, one the
  manifest knows only by token when there is one. When a face to re-add is still known only by token
  (a face_token image, or a face an unpruned group keeps), or the update drops a face that another user
  of the manifest is to get by face_token, the user is first copied into a staging group
  (``model.stage_group_id``: created, and deleted once every re-add is done), whose copy keeps those
  tokens alive. Those three calls count in the cost rule.
- A user that gains a photo whose token only ``detect`` answered (``DesiredImage.detected``) while losing
  faces it could not match is named in ``Plan.replaced_by_detect``: where detect and user/add disagree,
  those may be the same pictures (plan/matching.py). With ``reupload`` such a user is replaced by the
  update form, since an add first would meet the face it replaces.
- ``user/copy`` replaces the adds of a user that is new in a group when the same user_id has, in
  another managed group, the same images (matched by face_token, file sha256 or source), user_info and
  controls, at least two images (one image: an add costs the same and waits on nothing), and that
  source ends exactly as the manifest says after adds/updates only (no face deletes: those run later).
  Preferred source: in sync already, then converging, else one new group is built by adds and the
  others copy from it. A copy waits on every operation of its source user.
- A face that leaves one user of a group for another user of the same group (a move: matched by
  face_token, so between users whose faces were read) is added to its new user only after its old user
  lost it: Baidu may refuse one face on two users of a group (223105), and make-before-break would then
  never get past the add. Its old user still gains its other faces first, so it is never left without a
  face, except in a cycle of moves (a swap), where that is impossible under that refusal: there the
  faces moving out go first. A face the new user gets by face_token alone is kept alive meanwhile by a
  staging copy of its old user. The order is given by ``after``; the plan's list is reordered so that
  every ``after`` still points at an earlier operation.
- A desired user with no images is removed (a user cannot exist without a face).
- Safety unit: "records in scope" = users of managed groups + faces of the named users that exist +
  unlisted groups that the policy would delete. Deletes = user deletes + face deletes + faces dropped
  by an update and not re-added + group deletes. Unsafe when at least ``delete_threshold_min`` exist
  and more than ``max_delete_share`` of them would go.
- ``narrow`` (``--group``/``--user``) keeps only the named groups and users, turns off the deletion of
  unlisted groups, and marks each kept group with ``scope_users`` so that prune removes only users of
  the filter: users outside it are never touched. A narrowed group that has none of the users and does
  not exist is not created.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import IntEnum

from facesync.clock import utc_now
from facesync.errors import ConfigError
from facesync.model import (
    Desired,
    DesiredGroup,
    DesiredImage,
    DesiredUser,
    ImageKind,
    Live,
    LiveUser,
    is_lock_group,
    is_stage_group,
    stage_group_id,
)
from facesync.plan.ops import Expect, FaceSource, Operation, OpKind, Plan, Safety
from facesync.words import counted

_NEW_GROUP = "group in manifest, missing"
_UNLISTED_GROUP = "group not in manifest"
_NEW_USER = "new user"
_NEW_FACE = "new face"
_READD = "re-add after update"
_EXTRA_FACE = "face not in manifest"
_EXTRA_USER = "user not in manifest"
_NO_IMAGES = "user has no images in manifest"
_STAGE = "keeps faces known only by face_token alive during the update"
_STAGE_GROUP = "staging group for this apply"
_STAGE_CALLS = 3  # create the staging group, copy the user into it, delete it
# the reason of a staging copy made for a move (tests recognise such copies by it)
STAGE_MOVE = "keeps faces that move to another user by face_token alive until they are added there"


class _State(IntEnum):
    """A user's state in one group, for choosing copy sources; the order is the preference among sources."""

    SYNC = 0  # holds exactly the manifest's faces and user_info already
    CONVERGE = 1  # will hold exactly them once its own operations ran
    NEW = 2  # not in the group yet: a copy target
    OTHER = 3  # keeps faces the manifest does not name (no prune): never a copy source


def _face_source(image: DesiredImage) -> FaceSource:
    return FaceSource(image.kind, image.source, image.path, image.face_token, image.sha256)


def _token_source(token: str) -> FaceSource:
    return FaceSource(ImageKind.FACE_TOKEN, token, None, token)


class _Builder:
    """Accumulates operations in their final order; indexes of creates and writes are known on append,
    and nothing waits on a copy or a delete, so ``after`` is always final when an operation is made."""

    def __init__(self, desired: Desired, live: Live, stages: frozenset[str] = frozenset(), reupload: bool = False):
        self.desired = desired
        self.live = live
        self.reupload = reupload
        self.replaced_by_detect: list[tuple[str, str]] = []  # see plan/matching.py
        self.stages = stages  # staging groups to create first (found by an earlier pass)
        self.stages_needed: set[str] = set()
        self.stage_after: dict[str, list[int]] = {}  # staging group -> the writes its delete waits for
        self.unread_info: set[str] = set()  # user_ids written to whose kept user_info was not read
        self.live_group_ids = set(live.group_ids)
        self.creates: list[Operation] = []
        self.create_index: dict[str, int] = {}
        self.writes: list[Operation] = []
        self.copies: list[Operation] = []
        self.face_deletes: list[Operation] = []
        self.user_deletes: list[Operation] = []
        self.group_deletes: list[Operation] = []
        self.notes: list[str] = []
        self.existing = 0
        self.deleting = 0
        self.multi = _multi_group_users(desired)
        self.by_token = named_tokens(desired)
        self.states: dict[str, list[tuple]] = {}  # user_id -> [(order, state, group, user, deps, expect)]
        self._group_after: dict[str, tuple[int, ...]] = {}
        self.moves = _moves(desired, live)
        # moves: (group, token) -> the operations that take the face from its old user, and the operations
        # that give it to the new one and must wait for those (indexes are known only at the end)
        self.removals: dict[tuple[str, str], list[Operation]] = {}
        self.waits: list[tuple[Operation, tuple[str, str]]] = []

    # -- emitting -------------------------------------------------------------------------------
    def write(self, op: Operation) -> int:
        self.writes.append(op)
        return len(self.creates) + len(self.writes) - 1

    def group_after(self, group_id: str) -> tuple[int, ...]:
        return self._group_after.get(group_id, ())

    def operations(self) -> tuple[Operation, ...]:
        ops = (*self.creates, *self.writes, *self.copies, *self.face_deletes, *self.user_deletes,
               *self.group_deletes)
        if not self.waits:
            return ops
        index = {id(op): i for i, op in enumerate(ops)}
        extra: dict[int, set[int]] = {}
        for op, key in self.waits:
            extra.setdefault(index[id(op)], set()).update(index[id(r)] for r in self.removals.get(key, ()))
        return _reordered(ops, extra)

    def wait_for_move(self, op: Operation, group_id: str, token: str | None) -> None:
        """``op`` gives ``token`` to a user of ``group_id`` that another user of it holds until the plan
        removes it there: ``op`` waits for that removal."""
        if token is not None and (group_id, token) in self.moves.holders:
            self.waits.append((op, (group_id, token)))

    def removes_for_move(self, op: Operation, group_id: str, tokens) -> None:
        for token in tokens:
            self.removals.setdefault((group_id, token), []).append(op)

    def stage_copy(self, gid: str, uid: str, after: tuple[int, ...], expects: tuple[Expect, ...],
                   reason: str) -> int:
        """Copy the user into its group's staging group (created first, deleted once the re-adds are done)."""
        stage = stage_group_id(gid)
        self.stages_needed.add(stage)
        self.stage_after.setdefault(stage, [])
        return self.write(Operation(OpKind.COPY_USER, stage, uid, src_group_id=gid,
                                    after=(*after, *self.group_after(stage)), expects=expects, reason=reason))

    def _add_reason(self, gid: str, image: DesiredImage, default: str) -> str:
        holders = self.moves.holders.get((gid, image.face_token or ""))
        return f"moves from user {', '.join(holders)}" if holders else default

    # -- the passes -----------------------------------------------------------------------------
    def run(self) -> None:
        self.plan_creates()
        self.plan_groups()
        self.plan_copies()
        self.plan_stage_deletes()
        self.plan_unlisted()

    def plan_creates(self) -> None:
        for group in self.desired.groups:
            gid = group.group_id
            if is_lock_group(gid) or gid in self.live_group_ids or gid in self.create_index:
                continue
            if group.scope_users is not None and not group.users:
                continue
            self.create_index[gid] = len(self.creates)
            self._group_after[gid] = (len(self.creates),)
            self.creates.append(Operation(OpKind.CREATE_GROUP, gid, expects=(Expect(gid, None, False),),
                                          reason=_NEW_GROUP))
        for gid in sorted(self.stages):
            if gid in self.live_group_ids:  # left by an interrupted apply: reused, then deleted
                continue
            self._group_after[gid] = (len(self.creates),)
            self.creates.append(Operation(OpKind.CREATE_GROUP, gid, expects=(Expect(gid, None, False),),
                                          reason=_STAGE_GROUP))

    def plan_groups(self) -> None:
        for order, group in enumerate(self.desired.groups):
            if is_lock_group(group.group_id):
                self.notes.append(f"group {group.group_id} holds facesync's apply lock and is not managed")
                continue
            self.plan_group(order, group)

    def plan_group(self, order: int, group: DesiredGroup) -> None:
        gid = group.group_id
        live_group = self.live.groups.get(gid) if gid in self.live_group_ids else None
        live_users = live_group.users if live_group is not None else {}
        scope = group.scope_users
        named: set[str] = set()
        for user in group.users:
            uid = user.user_id
            if scope is not None and uid not in scope:
                continue
            named.add(uid)
            live_user = live_users.get(uid)
            if live_user is not None:
                self.existing += 1 + len(live_user.face_tokens or ())
            if not user.images:
                if live_user is not None:
                    self.delete_user(gid, live_user, _NO_IMAGES)
                continue
            if live_user is None:
                if uid in self.multi:
                    self._remember(uid, order, _State.NEW, group, user, (), Expect(gid, uid, False))
                else:
                    self.add_new_user(gid, user)
            else:
                state, deps, expect = self.sync_user(group, user, live_user)
                if uid in self.multi:
                    self._remember(uid, order, state, group, user, deps, expect)
        for uid in sorted(live_users.keys() - named):
            if scope is not None and uid not in scope:
                continue
            self.existing += 1
            if group.prune:
                self.delete_user(gid, live_users[uid], _EXTRA_USER)

    def _remember(self, uid, order, state, group, user, deps, expect) -> None:
        self.states.setdefault(uid, []).append((order, state, group, user, deps, expect))

    def add_new_user(self, gid: str, user: DesiredUser) -> tuple[int, ...]:
        after = self.group_after(gid)
        expects = (Expect(gid, user.user_id, False),)
        indexes = []
        seen: set = set()
        for image in user.images:
            key = _image_key(image, {}, {})
            if key in seen:
                continue
            seen.add(key)
            op = Operation(
                OpKind.ADD_FACE, gid, user.user_id, face=_face_source(image), user_info=user.user_info,
                quality_control=user.quality_control, liveness_control=user.liveness_control,
                after=after, expects=expects,
                reason=self._add_reason(gid, image, _NEW_FACE if indexes else _NEW_USER))
            indexes.append(self.write(op))
            self.wait_for_move(op, gid, image.face_token)
        return tuple(indexes)

    def delete_user(self, gid: str, live_user: LiveUser, reason: str) -> None:
        tokens = tuple(sorted(live_user.face_tokens)) if live_user.face_tokens is not None else None
        expect = Expect(gid, live_user.user_id, True, tokens, live_user.user_info)
        self.deleting += 1
        moving = self.moves.losses.get((gid, live_user.user_id), frozenset())
        after: tuple[int, ...] = ()
        if any((gid, token) in self.moves.by_token for token in moving):
            after = (self.stage_copy(gid, live_user.user_id, self.group_after(gid), (expect,), STAGE_MOVE),)
        op = Operation(OpKind.DELETE_USER, gid, live_user.user_id, after=after, expects=(expect,), reason=reason)
        self.user_deletes.append(op)
        self.removes_for_move(op, gid, moving)

    def kept_info(self, live_user: LiveUser) -> str | None:
        """The user_info an add to ``live_user`` sends when the manifest does not manage it: what the
        library has, so that a service that clears user_info on an add without one keeps it."""
        if live_user.user_info is None:
            self.unread_info.add(live_user.user_id)
            return None
        return live_user.user_info or None  # empty stays empty whether or not it is sent

    def sync_user(self, group: DesiredGroup, user: DesiredUser, live_user: LiveUser):
        """Converge one existing user; returns (state, indexes of its writes, its live expect)."""
        gid, uid = group.group_id, user.user_id
        if live_user.face_tokens is None:
            raise ValueError(f"faces of user {uid} in group {gid} were not read; cannot plan it")
        live_tokens = live_user.face_tokens
        live_set = set(live_tokens)
        wanted: list[DesiredImage] = []
        wanted_tokens: set[str] = set()
        for image in user.images:
            token = image.face_token
            if token is None:
                raise ValueError(f"image {image.source} of user {uid} in group {gid} has no face_token")
            if token not in wanted_tokens:
                wanted_tokens.add(token)
                wanted.append(image)
        info = user.user_info
        info_change = info is not None and info != live_user.user_info
        extra_set = live_set - wanted_tokens
        exact = group.prune or not extra_set  # ends with exactly the manifest's faces
        if not info_change and (wanted_tokens <= live_set) and (not extra_set or not group.prune):
            return (_State.SYNC if exact else _State.OTHER), (), None

        expect = Expect(gid, uid, True, tuple(sorted(live_tokens)), live_user.user_info)
        expects = (expect,)
        after = self.group_after(gid)
        new = [image for image in wanted if image.face_token not in live_set]
        kept = [image.face_token for image in wanted if image.face_token in live_set]
        extra = sorted(extra_set) if group.prune else []
        final_count = len(wanted) + (0 if group.prune else len(extra_set))
        incremental = len(new) + len(extra) if (new or not info_change) else None
        readd = kept + ([] if group.prune else sorted(extra_set))
        uploadable = {image.face_token: image for image in wanted if image.kind is not ImageKind.FACE_TOKEN}
        token_only = [token for token in readd if token not in uploadable]
        # faces the update drops that another user is to get by face_token: the copy keeps them usable
        dropped_wanted = bool(group.prune and extra_set & self.by_token)
        staged = dropped_wanted or len(token_only) > 1
        update_cost = final_count + (_STAGE_CALLS if staged else 0)
        moves = self.moves
        losses = moves.losses.get((gid, uid), frozenset())  # faces other users of the group take from it
        moving_in = {image.face_token for image in new if (gid, image.face_token) in moves.holders}
        stage_moves = any((gid, token) in moves.by_token for token in losses)
        if incremental is not None and stage_moves:
            incremental += _STAGE_CALLS
        # the update's one face cannot be a face that another user holds until the plan removes it there
        updatable = bool(readd) or any(image.face_token not in moving_in for image in new)
        if extra_set and any(image.detected for image in new):
            # its unmatched faces may be these very pictures, stored under other tokens (plan/matching.py)
            self.replaced_by_detect.append((gid, uid))
            if self.reupload and group.prune and updatable:
                incremental = None  # adds first would meet the faces they replace (223105): update, re-add
        if incremental is not None and (incremental <= update_cost or not updatable):
            send_info = info if info is not None else (self.kept_info(live_user) if new else None)
            # the staging copy goes before any face moves in: two copies in the staging group never share one
            copy = (self.stage_copy(gid, uid, after, expects, STAGE_MOVE),) if stage_moves else ()
            adds, own_adds = [], []  # own: not moving in from another user, so never waiting on one
            for image in new:
                moving = image.face_token in moving_in
                op = Operation(
                    OpKind.ADD_FACE, gid, uid, face=_face_source(image), user_info=send_info,
                    quality_control=user.quality_control, liveness_control=user.liveness_control,
                    after=(*after, *copy) if moving else after, expects=expects,
                    reason=self._add_reason(gid, image, _NEW_FACE))
                adds.append(self.write(op))
                if moving:
                    self.wait_for_move(op, gid, image.face_token)
                else:
                    own_adds.append(adds[-1])
            indexes = tuple(adds)
            in_cycle = (gid, uid) in moves.cyclic
            for token in extra:
                self.deleting += 1
                if token not in losses:
                    self.face_deletes.append(Operation(OpKind.DELETE_FACE, gid, uid, face_token=token,
                                                       after=(*indexes, *copy), expects=expects,
                                                       reason=_EXTRA_FACE))
                    continue
                # in a cycle of moves the user cannot gain its faces first: those wait for this delete
                op = Operation(OpKind.DELETE_FACE, gid, uid, face_token=token,
                               after=(*(own_adds if in_cycle else indexes), *copy), expects=expects,
                               reason=f"moves to user {', '.join(moves.receivers[(gid, token)])}")
                self.face_deletes.append(op)
                self.removes_for_move(op, gid, (token,))
            return (_State.OTHER if extra else (_State.CONVERGE if exact else _State.OTHER)), indexes, expect

        # the update form: one face replaces all, then the rest are (re-)added, all sending the user_info
        info = info if info is not None else self.kept_info(live_user)
        if group.prune:
            self.deleting += len(extra_set)
        first_token = (token_only[0] if token_only else readd[0]) if readd else None
        readd = [token for token in readd if token != first_token]
        stage = None
        if staged:
            stage = stage_group_id(gid)
            after = (*after, self.stage_copy(gid, uid, after, expects, _STAGE))
        if first_token is not None:
            update = Operation(
                OpKind.UPDATE_USER, gid, uid, face=_token_source(first_token), user_info=info,
                after=after, expects=expects,
                reason="set user_info" if info_change and not new else "update is cheaper than deleting faces")
        else:
            image = next(image for image in new if image.face_token not in moving_in)
            new = [other for other in new if other is not image]
            update = Operation(
                OpKind.UPDATE_USER, gid, uid, face=_face_source(image), user_info=info,
                quality_control=user.quality_control, liveness_control=user.liveness_control,
                after=after, expects=expects, reason="replace every face")
        first = self.write(update)
        self.removes_for_move(update, gid, losses)
        after_update = (*after, first)
        indexes = [first]
        for token in readd:
            source = uploadable.get(token)
            indexes.append(self.write(Operation(
                OpKind.ADD_FACE, gid, uid, face=_face_source(source) if source else _token_source(token),
                user_info=info, after=after_update, expects=expects, reason=_READD)))
        for image in new:
            op = Operation(
                OpKind.ADD_FACE, gid, uid, face=_face_source(image), user_info=info,
                quality_control=user.quality_control, liveness_control=user.liveness_control,
                after=after_update, expects=expects, reason=self._add_reason(gid, image, _NEW_FACE))
            indexes.append(self.write(op))
            self.wait_for_move(op, gid, image.face_token)
        if stage is not None:
            self.stage_after.setdefault(stage, []).extend(indexes)
        return (_State.CONVERGE if exact else _State.OTHER), tuple(indexes), expect

    def plan_stage_deletes(self) -> None:
        """Each staging group goes once every re-add that may need its copies is done, and every add by
        face_token of a face moving between two users of its group."""
        if self.waits:
            index = {id(op): len(self.creates) + i for i, op in enumerate(self.writes)}
            for op, (gid, _token) in self.waits:
                stage = stage_group_id(gid)
                if op.face is not None and op.face.kind is ImageKind.FACE_TOKEN and stage in self.stage_after:
                    self.stage_after[stage].append(index[id(op)])
        for gid in sorted(self.stage_after):
            self.group_deletes.append(Operation(OpKind.DELETE_GROUP, gid, after=tuple(sorted(set(self.stage_after[gid]))),
                                                reason=_STAGE_GROUP))

    def plan_copies(self) -> None:
        """Users that are new in a group: copy them from a group that holds the same user, or add them."""
        if not self.states:
            return
        for uid, entries in self.states.items():
            by_sha, by_source = _token_maps(entry[3] for entry in entries)
            by_signature: dict[tuple, list[tuple]] = {}
            for entry in entries:
                user = entry[3]
                keys = frozenset(_image_key(image, by_sha, by_source) for image in user.images)
                signature = (keys, user.user_info, user.quality_control, user.liveness_control)
                by_signature.setdefault(signature, []).append(entry)
            for signature, same in by_signature.items():
                news = [entry for entry in same if entry[1] == _State.NEW]
                if not news:
                    continue
                if len(signature[0]) < 2:
                    for entry in news:
                        self.add_new_user(entry[2].group_id, entry[3])
                    continue
                sources = sorted((entry for entry in same if entry[1] in (_State.SYNC, _State.CONVERGE)),
                                 key=lambda entry: (entry[1], entry[0]))
                if sources:
                    source = sources[0]
                    deps, source_expect = source[4], source[5]
                    if source_expect is None:
                        live_user = self.live.groups[source[2].group_id].users[uid]
                        source_expect = Expect(source[2].group_id, uid, True,
                                               tuple(sorted(live_user.face_tokens or ())),
                                               live_user.user_info)
                else:
                    source, news = news[0], news[1:]
                    deps = self.add_new_user(source[2].group_id, source[3])
                    source_expect = source[5]
                src_gid = source[2].group_id
                for entry in news:
                    dst = entry[2].group_id
                    after = tuple(sorted({*deps, *self.group_after(dst)}))
                    copy = Operation(OpKind.COPY_USER, dst, uid, src_group_id=src_gid, after=after,
                                     expects=(entry[5], source_expect), reason=f"same user as in group {src_gid}")
                    self.copies.append(copy)
                    for image in entry[3].images:
                        self.wait_for_move(copy, dst, image.face_token)

    def plan_unlisted(self) -> None:
        policy = self.desired.policy
        listed = {group.group_id for group in self.desired.groups}
        outside = set(self.desired.outside_filter)
        filtered = [gid for gid in self.live.group_ids if gid in outside]
        if filtered:
            shown = ", ".join(filtered[:5]) + (f" and {len(filtered) - 5} more" if len(filtered) > 5 else "")
            self.notes.append(f"{counted(len(filtered), 'group')} of the manifest outside --group left alone: {shown}")
        unlisted = [gid for gid in self.live.group_ids
                    if gid not in listed and gid not in outside and not is_lock_group(gid)
                    and not is_stage_group(gid)]
        left = sorted(gid for gid in self.live.group_ids if is_stage_group(gid) and gid not in self.stage_after)
        if left:
            self.notes.append(f"staging group(s) left by an interrupted apply, kept until a plan stages the same "
                              f"group again (their copies may hold faces still to re-add): {', '.join(left)}")
        if not unlisted:
            return
        if not policy.delete_unlisted_groups:
            shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
            self.notes.append(f"{counted(len(unlisted), 'group')} not in the manifest left alone: {shown}")
            return
        for gid in unlisted:
            if gid in policy.protected_groups:
                self.notes.append(f"group {gid} is not in the manifest but protected: kept")
                continue
            self.existing += 1
            self.deleting += 1
            self.group_deletes.append(Operation(OpKind.DELETE_GROUP, gid, expects=(Expect(gid, None, True),),
                                                reason=_UNLISTED_GROUP))

    def safety(self, force: bool) -> Safety:
        policy = self.desired.policy
        reasons: tuple[str, ...] = ()
        existing, deleting = self.existing, self.deleting
        if existing >= policy.delete_threshold_min and deleting > policy.max_delete_share * existing:
            reason = (f"the plan deletes {deleting} of {existing} users, faces and groups in scope "
                      f"({deleting / existing:.0%}), above the {policy.max_delete_share:.0%} limit")
            reasons = (reason,)
        return Safety(existing=self.existing, deleting=self.deleting, max_share=policy.max_delete_share,
                      threshold_min=policy.delete_threshold_min, reasons=reasons, forced=force)


@dataclass(frozen=True, slots=True)
class _Moves:
    """Faces that leave one user of a group for another user of the same group, matched by face_token."""

    holders: dict[tuple[str, str], tuple[str, ...]]  # (group, token) -> the users that lose it
    receivers: dict[tuple[str, str], tuple[str, ...]]  # (group, token) -> the users that gain it
    losses: dict[tuple[str, str], frozenset[str]]  # (group, user) -> the faces it gives up
    by_token: frozenset[tuple[str, str]]  # (group, token) that a new user gets by FACE_TOKEN alone
    cyclic: frozenset[tuple[str, str]]  # (group, user) on a cycle of moves: it gains from whom it gives to


def _moves(desired: Desired, live: Live) -> _Moves:
    """One pass over the named users for the faces they gain, and, only in a group where some are gained,
    one cheap test per live user (``isdisjoint``): an in-sync library of a million faces costs no set."""
    holders: dict[tuple[str, str], list[str]] = {}
    receivers: dict[tuple[str, str], list[str]] = {}
    losses: dict[tuple[str, str], set[str]] = {}
    by_token: set[tuple[str, str]] = set()
    edges: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for group in desired.groups:
        gid = group.group_id
        live_group = live.groups.get(gid) if gid in live.group_ids else None
        if live_group is None:
            continue
        live_users = live_group.users
        scope = group.scope_users
        named = {user.user_id: user for user in group.users if scope is None or user.user_id in scope}
        gaining: dict[str, dict[str, DesiredImage]] = {}  # token -> {user that gains it: its image}
        for uid, user in named.items():
            live_user = live_users.get(uid)
            have = (live_user.face_tokens or ()) if live_user is not None else ()
            for image in user.images:
                if image.face_token is not None and image.face_token not in have:
                    gaining.setdefault(image.face_token, {}).setdefault(uid, image)
        if not gaining:
            continue
        leaving: dict[str, list[str]] = {}  # token -> users of the group that hold it and lose it
        for uid, live_user in live_users.items():
            faces = live_user.face_tokens
            if faces is None or gaining.keys().isdisjoint(faces) or (scope is not None and uid not in scope):
                continue  # faces not read (a user that is only deleted), none gained, or out of scope
            user = named.get(uid)
            if not group.prune and (user is None or user.images):
                continue  # keeps every face it has
            keeps = {image.face_token for image in user.images} if user is not None else set()
            for token in faces:
                if token in gaining and token not in keeps:
                    leaving.setdefault(token, []).append(uid)
        for token, gainers in gaining.items():
            for uid, image in gainers.items():
                givers = [holder for holder in leaving.get(token, ()) if holder != uid]
                if not givers:
                    continue
                holders[(gid, token)] = givers
                receivers.setdefault((gid, token), []).append(uid)
                if image.kind is ImageKind.FACE_TOKEN:
                    by_token.add((gid, token))
                for giver in givers:
                    losses.setdefault((gid, giver), set()).add(token)
                    edges.setdefault((gid, giver), set()).add((gid, uid))
    cyclic = frozenset(_on_cycles(edges))
    return _Moves({key: tuple(value) for key, value in holders.items()},
                  {key: tuple(value) for key, value in receivers.items()},
                  {key: frozenset(value) for key, value in losses.items()}, frozenset(by_token), cyclic)


def _on_cycles(edges: dict[tuple[str, str], set[tuple[str, str]]]) -> set[tuple[str, str]]:
    """Nodes of ``edges`` that lie on a cycle: members of a strongly connected component of two or more
    (Tarjan's algorithm, iterative; no node has an edge to itself)."""
    index: dict[tuple[str, str], int] = {}
    low: dict[tuple[str, str], int] = {}
    stack: list[tuple[str, str]] = []
    on_stack: set[tuple[str, str]] = set()
    found: set[tuple[str, str]] = set()
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.update(component)
    return found


def _reordered(ops: tuple[Operation, ...], extra: dict[int, set[int]]) -> tuple[Operation, ...]:
    """``ops`` with the waits of moves (``extra``: index -> indexes it also waits for, possibly later ones)
    added to ``after``, in an order where every ``after`` points at an earlier operation: otherwise the
    order of ``ops``, each operation as early as its waits allow (Kahn's algorithm, lowest index first)."""
    needs = [set(op.after) | extra.get(i, set()) for i, op in enumerate(ops)]
    waiting = [len(need) for need in needs]
    dependents: list[list[int]] = [[] for _ in ops]
    for i, need in enumerate(needs):
        for j in need:
            dependents[j].append(i)
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order: list[int] = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in dependents[i]:
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(ops):
        raise AssertionError("the moves between users of a group form a cycle the planner did not break")
    position = {old: new for new, old in enumerate(order)}
    return tuple(
        ops[i] if i not in extra and all(position[j] == j for j in ops[i].after) else
        replace(ops[i], after=tuple(position[j] for j in (*ops[i].after, *sorted(extra.get(i, set()) - set(ops[i].after)))))
        for i in order)


def _multi_group_users(desired: Desired) -> set[str]:
    """user_ids named in more than one group: the only candidates for user/copy."""
    seen: set[str] = set()
    multi: set[str] = set()
    for group in desired.groups:
        for user in group.users:
            if user.user_id in seen:
                multi.add(user.user_id)
            seen.add(user.user_id)
    return multi


def _token_maps(users: Iterable[DesiredUser]) -> tuple[dict[str, str], dict[str, str]]:
    """sha256 -> face_token and source -> face_token from the resolved images of one user_id's entries, so
    that a resolved image and the same unresolved one compare equal. Only that user's own images: a
    narrowed plan (``--user``) holds every group of the user but not the other users, and must choose the
    copies the full plan chooses."""
    by_sha: dict[str, str] = {}
    by_source: dict[str, str] = {}
    for user in users:
        for image in user.images:
            if image.face_token:
                if image.sha256:
                    by_sha[image.sha256] = image.face_token
                by_source[image.path or image.source] = image.face_token
    return by_sha, by_source


def _image_key(image: DesiredImage, by_sha: dict[str, str], by_source: dict[str, str]):
    if image.face_token:
        return image.face_token
    if image.sha256:
        return by_sha.get(image.sha256) or ("sha256", image.sha256)
    where = image.path or image.source
    return by_source.get(where) or (image.kind.value, where)


def _build(desired: Desired, live: Live, reupload: bool = False) -> _Builder:
    builder = _Builder(desired, live, reupload=reupload)
    builder.run()
    if builder.stages_needed:  # a second pass creates them first, so every index stays final on append
        builder = _Builder(desired, live, frozenset(builder.stages_needed), reupload)
        builder.run()
    return builder


def user_info_to_read(desired: Desired, live: Live) -> frozenset[str]:
    """user_ids whose user_info the plan must send back but ``live`` has not read (see the module doc)."""
    return frozenset(_build(desired, live).unread_info)


def make_plan(desired: Desired, live: Live, *, target: str | None = None, qps: float | None = None,
              created_at: str | None = None, force: bool = False, reupload: bool = False) -> Plan:
    """The cheapest ordered operations that make ``live`` equal to ``desired`` within its scope.

    Pure: reads the clock only when ``created_at`` is None. ``force`` is recorded in the plan's safety
    (reasons are still listed); ``qps`` is the rate the time estimate assumes. ``reupload``: the users
    whose faces are replaced on detected tokens alone (``Plan.replaced_by_detect``) are replaced by the
    update form, so that no add meets the face it replaces. ``ValueError`` when ``live`` lacks a fact the
    plan needs (faces, or a user_info to keep: see ``user_info_to_read``).
    """
    builder = _build(desired, live, reupload)
    if builder.unread_info:
        shown = ", ".join(sorted(builder.unread_info)[:5])
        raise ValueError(f"user_info of {len(builder.unread_info)} user(s) that the plan adds faces to was not "
                         f"read ({shown}); it must be sent back so that it is kept")
    return Plan(
        operations=builder.operations(),
        target=live.identity if target is None else target,
        manifest_digest=desired.digest,
        safety=builder.safety(force),
        live_source=live.source,
        created_at=utc_now() if created_at is None else created_at,
        notes=tuple(builder.notes),
        qps=qps,
        protected_groups=tuple(sorted(desired.policy.protected_groups)),
        replaced_by_detect=tuple(sorted(builder.replaced_by_detect)),
        reupload=reupload and bool(builder.replaced_by_detect),
    )


def narrow(desired: Desired, groups: set[str] | frozenset[str] | None = None,
           users: set[str] | frozenset[str] | None = None) -> Desired:
    """``desired`` limited to ``groups`` and ``users`` (``--group``/``--user``), nothing pruned outside."""
    if groups is None and users is None:
        return desired
    listed = {group.group_id for group in desired.groups}
    for gid in sorted((groups or set()) - listed):
        raise ConfigError(f"--group {gid}: the manifest has no such group",
                          hint="name a group of the manifest")
    if users is not None:
        named = {user.user_id for group in desired.groups for user in group.users}
        for uid in sorted(set(users) - named):
            raise ConfigError(f"--user {uid}: no group of the manifest has this user",
                              hint="name a user of the manifest")
    kept_groups = []
    for group in desired.groups:
        if groups is not None and group.group_id not in groups:
            continue
        if users is not None:
            scope = frozenset(users) if group.scope_users is None else group.scope_users & frozenset(users)
            group = replace(group, users=tuple(u for u in group.users if u.user_id in scope),
                            scope_users=scope)
        kept_groups.append(group)
    policy = replace(desired.policy, delete_unlisted_groups=False)
    kept = {group.group_id for group in kept_groups}
    outside = tuple(group.group_id for group in desired.groups if group.group_id not in kept)
    return replace(desired, groups=tuple(kept_groups), policy=policy,
                   outside_filter=(*desired.outside_filter, *outside), named_tokens=named_tokens(desired))


def named_tokens(desired: Desired) -> frozenset[str]:
    """Faces the manifest names by face_token: a plan must not make them unusable (see the module doc)."""
    if desired.named_tokens is not None:
        return desired.named_tokens
    return frozenset(image.face_token or image.source for group in desired.groups for user in group.users
                     for image in user.images if image.kind is ImageKind.FACE_TOKEN)
