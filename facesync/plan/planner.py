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
- ``user/update`` resets user_info when none is sent (the contract's default is empty), so the update
  form is used only for users whose user_info the manifest manages; the others get adds and deletes.
- After a ``user/update`` the other faces are re-added from the manifest's file or URL (a FACE_TOKEN may
  stop working once no user holds its face). The update itself goes by the token of a kept face, one the
  manifest knows only by token when there is one. When a face to re-add is still known only by token
  (a face_token image, or a face an unpruned group keeps), or the update drops a face that another user
  of the manifest is to get by face_token, the user is first copied into a staging group
  (``model.stage_group_id``: created, and deleted once every re-add is done), whose copy keeps those
  tokens alive. Those three calls count in the cost rule.
- ``user/copy`` replaces the adds of a user that is new in a group when the same user_id has, in
  another managed group, the same images (matched by face_token, file sha256 or source), user_info and
  controls, at least two images (one image: an add costs the same and waits on nothing), and that
  source ends exactly as the manifest says after adds/updates only (no face deletes: those run later).
  Preferred source: in sync already, then converging, else one new group is built by adds and the
  others copy from it. A copy waits on every operation of its source user.
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

from collections.abc import Iterable
from dataclasses import replace
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

    def __init__(self, desired: Desired, live: Live, stages: frozenset[str] = frozenset()):
        self.desired = desired
        self.live = live
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

    # -- emitting -------------------------------------------------------------------------------
    def write(self, op: Operation) -> int:
        self.writes.append(op)
        return len(self.creates) + len(self.writes) - 1

    def group_after(self, group_id: str) -> tuple[int, ...]:
        return self._group_after.get(group_id, ())

    def operations(self) -> tuple[Operation, ...]:
        return (*self.creates, *self.writes, *self.copies, *self.face_deletes, *self.user_deletes,
                *self.group_deletes)

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
            indexes.append(self.write(Operation(
                OpKind.ADD_FACE, gid, user.user_id, face=_face_source(image), user_info=user.user_info,
                quality_control=user.quality_control, liveness_control=user.liveness_control,
                after=after, expects=expects, reason=_NEW_FACE if indexes else _NEW_USER)))
        return tuple(indexes)

    def delete_user(self, gid: str, live_user: LiveUser, reason: str) -> None:
        tokens = tuple(sorted(live_user.face_tokens)) if live_user.face_tokens is not None else None
        expect = Expect(gid, live_user.user_id, True, tokens, live_user.user_info)
        self.deleting += 1
        self.user_deletes.append(Operation(OpKind.DELETE_USER, gid, live_user.user_id, expects=(expect,),
                                           reason=reason))

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
        if incremental is not None and (incremental <= update_cost or info is None):
            send_info = info if info is not None else (self.kept_info(live_user) if new else None)
            indexes = tuple(self.write(Operation(
                OpKind.ADD_FACE, gid, uid, face=_face_source(image), user_info=send_info,
                quality_control=user.quality_control, liveness_control=user.liveness_control,
                after=after, expects=expects, reason=_NEW_FACE)) for image in new)
            for token in extra:
                self.deleting += 1
                self.face_deletes.append(Operation(OpKind.DELETE_FACE, gid, uid, face_token=token,
                                                   after=indexes, expects=expects, reason=_EXTRA_FACE))
            return (_State.OTHER if extra else (_State.CONVERGE if exact else _State.OTHER)), indexes, expect

        # the update form: one face replaces all, then the rest are (re-)added
        if group.prune:
            self.deleting += len(extra_set)
        first_token = (token_only[0] if token_only else readd[0]) if readd else None
        readd = [token for token in readd if token != first_token]
        stage = None
        if staged:
            stage = stage_group_id(gid)
            self.stages_needed.add(stage)
            copy = self.write(Operation(
                OpKind.COPY_USER, stage, uid, src_group_id=gid, after=(*after, *self.group_after(stage)),
                expects=expects, reason=_STAGE))
            after = (*after, copy)
        if first_token is not None:
            first = self.write(Operation(
                OpKind.UPDATE_USER, gid, uid, face=_token_source(first_token), user_info=info,
                after=after, expects=expects,
                reason="set user_info" if not new else "update is cheaper than deleting faces"))
        else:
            image, new = new[0], new[1:]
            first = self.write(Operation(
                OpKind.UPDATE_USER, gid, uid, face=_face_source(image), user_info=info,
                quality_control=user.quality_control, liveness_control=user.liveness_control,
                after=after, expects=expects, reason="replace every face"))
        after_update = (*after, first)
        indexes = [first]
        for token in readd:
            source = uploadable.get(token)
            indexes.append(self.write(Operation(
                OpKind.ADD_FACE, gid, uid, face=_face_source(source) if source else _token_source(token),
                user_info=info, after=after_update, expects=expects, reason=_READD)))
        for image in new:
            indexes.append(self.write(Operation(
                OpKind.ADD_FACE, gid, uid, face=_face_source(image), user_info=info,
                quality_control=user.quality_control, liveness_control=user.liveness_control,
                after=after_update, expects=expects, reason=_NEW_FACE)))
        if stage is not None:
            self.stage_after.setdefault(stage, []).extend(indexes)
        return (_State.CONVERGE if exact else _State.OTHER), tuple(indexes), expect

    def plan_stage_deletes(self) -> None:
        """Each staging group goes once every re-add that may need its copies is done."""
        for gid in sorted(self.stage_after):
            self.group_deletes.append(Operation(OpKind.DELETE_GROUP, gid, after=tuple(sorted(self.stage_after[gid])),
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
                    self.copies.append(Operation(
                        OpKind.COPY_USER, dst, uid, src_group_id=src_gid, after=after,
                        expects=(entry[5], source_expect), reason=f"same user as in group {src_gid}"))

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


def _build(desired: Desired, live: Live) -> _Builder:
    builder = _Builder(desired, live)
    builder.run()
    if builder.stages_needed:  # a second pass creates them first, so every index stays final on append
        builder = _Builder(desired, live, frozenset(builder.stages_needed))
        builder.run()
    return builder


def user_info_to_read(desired: Desired, live: Live) -> frozenset[str]:
    """user_ids whose user_info the plan must send back but ``live`` has not read (see the module doc)."""
    return frozenset(_build(desired, live).unread_info)


def make_plan(desired: Desired, live: Live, *, target: str | None = None, qps: float | None = None,
              created_at: str | None = None, force: bool = False) -> Plan:
    """The cheapest ordered operations that make ``live`` equal to ``desired`` within its scope.

    Pure: reads the clock only when ``created_at`` is None. ``force`` is recorded in the plan's safety
    (reasons are still listed); ``qps`` is the rate the time estimate assumes. ``ValueError`` when
    ``live`` lacks a fact the plan needs (faces, or a user_info to keep: see ``user_info_to_read``).
    """
    builder = _build(desired, live)
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
