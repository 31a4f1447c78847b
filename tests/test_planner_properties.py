"""Properties of the planner over random libraries, checked on a small pure model of the contract.

``simulate`` applies operations with the semantics of baidu-faceset-v3.md (add appends a face and
creates the user, update replaces every face and sets user_info, deleting the last face deletes the
user, copy duplicates a user) and fails on any call the real library would refuse. Where the contract
is silent it takes either variant of its UNKNOWN table: ``lenient``, or ``harsh`` (an add or update
without user_info clears it; a FACE_TOKEN works only while some user of the app holds that face; one face
is never on two users of a group, so faces moving between users of a group must leave before they come).
"""

from __future__ import annotations

import hashlib
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facesync.apply.order import dependencies
from facesync.model import (
    LOCK_GROUP_PREFIX,
    Desired,
    DesiredGroup,
    DesiredImage,
    DesiredUser,
    ImageKind,
    Live,
    LiveGroup,
    LiveUser,
    Policy,
    is_stage_group,
)
from facesync.plan.ops import OpKind, Plan
from facesync.plan.planner import STAGE_MOVE, make_plan

IMAGES = [f"img{i}.jpg" for i in range(6)]
TOKEN = {name: hashlib.md5(name.encode()).hexdigest() for name in IMAGES}
NAME = {token: name for name, token in TOKEN.items()}
SHA = {name: hashlib.sha256(name.encode()).hexdigest() for name in IMAGES}
MANAGED = ["g0", "g1", "g2"]
UNLISTED = ["x0", "x1"]
USERS = ["u0", "u1", "u2", "u3"]
INFOS = ["", "a", "b"]

State = dict  # group_id -> {user_id: [list of face_tokens, user_info]}


class Refused(AssertionError):
    """A call the real library would answer with an error."""


def _held(state: State, token: str) -> bool:
    return any(token in user[0] for users in state.values() for user in users.values())


def _on_other_user(users: dict, uid: str, tokens) -> bool:
    return any(token in user[0] for other, user in users.items() if other != uid for token in tokens)


def simulate(state: State, op, unknowns: str = "lenient") -> None:
    groups = state
    harsh = unknowns == "harsh"
    if harsh and op.face is not None and op.face.kind is ImageKind.FACE_TOKEN and not _held(state, op.face.face_token):
        raise Refused(f"222209 {op.key}: the face of this FACE_TOKEN is held by no user any more")
    gid, uid = op.group_id, op.user_id
    if harsh and gid in groups and op.kind in (OpKind.ADD_FACE, OpKind.UPDATE_USER, OpKind.COPY_USER):
        tokens = ([op.face.face_token or TOKEN[op.face.source]] if op.face is not None else
                  groups.get(op.src_group_id, {}).get(uid, [[]])[0])
        if _on_other_user(groups[gid], uid, tokens):
            raise Refused(f"223105 {op.key}: the face is on another user of this group")
    if op.kind is OpKind.CREATE_GROUP:
        if gid in groups:
            raise Refused(f"223101 {op.key}")
        groups[gid] = {}
    elif op.kind is OpKind.DELETE_GROUP:
        if gid not in groups:
            raise Refused(f"223100 {op.key}")
        del groups[gid]
    elif gid not in groups:
        raise Refused(f"223100 {op.key}")
    elif op.kind is OpKind.ADD_FACE:
        token = op.face.face_token or TOKEN[op.face.source]
        user = groups[gid].setdefault(uid, [[], ""])
        if token in user[0]:
            raise Refused(f"223105 {op.key}")
        user[0].append(token)
        if op.user_info is not None or harsh:
            user[1] = op.user_info or ""
    elif op.kind is OpKind.UPDATE_USER:
        if uid not in groups[gid]:
            raise Refused(f"223103 {op.key}")
        token = op.face.face_token or TOKEN[op.face.source]
        groups[gid][uid] = [[token], op.user_info if op.user_info is not None else ""]
    elif op.kind is OpKind.COPY_USER:
        source = groups.get(op.src_group_id)
        if source is None or uid not in source or uid in groups[gid]:
            raise Refused(f"copy refused {op.key}")
        groups[gid][uid] = [list(source[uid][0]), source[uid][1]]
    elif op.kind is OpKind.DELETE_FACE:
        user = groups[gid].get(uid)
        if user is None or op.face_token not in user[0]:
            raise Refused(f"223106 {op.key}")
        user[0].remove(op.face_token)
        if not user[0]:
            del groups[gid][uid]
    elif op.kind is OpKind.DELETE_USER:
        if uid not in groups[gid]:
            raise Refused(f"223103 {op.key}")
        del groups[gid][uid]
    else:  # pragma: no cover
        raise AssertionError(op.kind)


def copy_state(state: State) -> State:
    return {gid: {uid: [list(u[0]), u[1]] for uid, u in users.items()} for gid, users in state.items()}


def live_of(state: State, desired: Desired, read_all: bool = True) -> Live:
    """What refresh would read: every group id, the managed groups with faces and user_info."""
    managed = {group.group_id for group in desired.groups}
    groups = {
        gid: LiveGroup(gid, {uid: LiveUser(uid, tuple(faces), info) for uid, (faces, info) in users.items()})
        for gid, users in state.items() if gid in managed
    }
    return Live(group_ids=tuple(state), groups=groups, identity="sim")


def _name(image: DesiredImage) -> str:
    return NAME[image.source] if image.kind is ImageKind.FACE_TOKEN else image.source


def resolved(desired: Desired, state: State, drop: random.Random | None = None) -> Desired:
    """Tokens filled as resolve would: always for users that exist in that group, sometimes for others.
    Images the manifest names by face_token keep that kind (and always have their token)."""
    groups = []
    for group in desired.groups:
        users = []
        for user in group.users:
            exists = user.user_id in state.get(group.group_id, {})
            images = tuple(
                DesiredImage(ImageKind.FACE_TOKEN, TOKEN[name], None, None, TOKEN[name])
                if image.kind is ImageKind.FACE_TOKEN else
                DesiredImage(ImageKind.FILE, name, f"/m/{name}", SHA[name],
                             TOKEN[name] if exists or (drop is not None and drop.random() < 0.5) else None)
                for image, name in ((image, _name(image)) for image in user.images)
            )
            users.append(DesiredUser(user.user_id, images, user.user_info))
        groups.append(DesiredGroup(group.group_id, tuple(users), group.prune))
    return Desired(tuple(groups), desired.policy, digest=desired.digest)


images_st = st.lists(st.sampled_from(IMAGES), min_size=1, max_size=4, unique=True)


@st.composite
def scenarios(draw):
    group_ids = draw(st.lists(st.sampled_from(MANAGED + UNLISTED), unique=True))
    if draw(st.booleans()):
        group_ids.append(LOCK_GROUP_PREFIX + "_hr0_abc_1_host")
    state: State = {}
    for gid in group_ids:
        state[gid] = {uid: [[TOKEN[n] for n in draw(images_st)], draw(st.sampled_from(INFOS))]
                      for uid in draw(st.lists(st.sampled_from(USERS), unique=True, max_size=3))}
    profiles = {uid: (tuple(draw(images_st)), draw(st.sampled_from([None, *INFOS]))) for uid in USERS}
    groups = []
    for gid in draw(st.lists(st.sampled_from(MANAGED), min_size=1, unique=True)):
        users = []
        for uid in draw(st.lists(st.sampled_from(USERS), unique=True, max_size=3)):
            if draw(st.booleans()):
                names, info = profiles[uid]  # the same user in several groups: copy candidates
            else:
                names, info = tuple(draw(images_st)), draw(st.sampled_from([None, *INFOS]))
            # a manifest may name faces by face_token alone: only faces that exist somewhere, as export writes
            by_token = all(_held(state, TOKEN[n]) for n in names) and draw(st.integers(0, 2)) == 0
            users.append(DesiredUser(uid, tuple(DesiredImage(ImageKind.FACE_TOKEN, TOKEN[n]) if by_token
                                                else DesiredImage(ImageKind.FILE, n) for n in names), info))
        groups.append(DesiredGroup(gid, tuple(users), prune=draw(st.booleans())))
    policy = Policy(delete_unlisted_groups=draw(st.booleans()),
                    protected_groups=frozenset(draw(st.lists(st.sampled_from(UNLISTED), unique=True))),
                    delete_threshold_min=draw(st.integers(0, 20)))
    desired = Desired(tuple(groups), policy, digest="d")
    seed = draw(st.randoms(use_true_random=False))
    return state, resolved(desired, state, seed), seed


def harsh_valid(state: State, desired: Desired) -> tuple[State, Desired]:
    """``state`` and ``desired`` with each face on at most one user of a group (the first that has it), as a
    service that refuses one face on two users of a group can hold and be asked for. A face whose token
    is not known yet (a user new to every group, whose images resolve does not read) is left out where
    the group holds it: no plan can tell that it moves."""
    fixed: State = {}
    for gid, users in state.items():
        seen: set[str] = set()
        fixed[gid] = {}
        for uid in sorted(users):
            faces = [token for token in users[uid][0] if token not in seen]
            seen.update(faces)
            if faces:
                fixed[gid][uid] = [faces, users[uid][1]]
    groups = []
    for group in desired.groups:
        holder = {token: uid for uid, user in fixed.get(group.group_id, {}).items() for token in user[0]}
        seen = set()
        users = []
        for user in group.users:
            images = []
            for image in user.images:
                name = _name(image)
                other = holder.get(TOKEN[name], user.user_id) != user.user_id
                # without prune the other user keeps it; a token not known cannot be seen to move
                if TOKEN[name] in seen or (other and not group.prune) or (image.face_token is None and other):
                    continue
                seen.add(TOKEN[name])
                images.append(image)
            users.append(DesiredUser(user.user_id, tuple(images), user.user_info))
        groups.append(DesiredGroup(group.group_id, tuple(users), group.prune))
    return fixed, Desired(tuple(groups), desired.policy, digest=desired.digest)


def moved_in(state: State, desired: Desired) -> set[tuple[str, str]]:
    """(group, user) whose every wanted face some other user of the group holds at the start: in a cycle
    of moves such a user may be left without a face for a moment (its faces leave before others arrive)."""
    found = set()
    for group in desired.groups:
        users = state.get(group.group_id, {})
        for user in group.users:
            if user.images and all(_on_other_user(users, user.user_id, [TOKEN[_name(image)]]) for image in user.images):
                found.add((group.group_id, user.user_id))
    return found


def run_in_order(plan: Plan, state: State, desired: Desired, order: list[int], unknowns: str = "lenient") -> State:
    """Applies ``plan`` in ``order``, checking dependencies and make-before-break after every call."""
    wanted = [(g.group_id, u.user_id) for g in desired.groups for u in g.users if u.images]
    may_vanish = moved_in(state, desired)
    state = copy_state(state)
    alive = [(gid, uid) for gid, uid in wanted if uid in state.get(gid, {}) and (gid, uid) not in may_vanish]
    done: set[int] = set()
    for index in order:
        op = plan.operations[index]
        assert set(op.after) <= done, f"{op.key} ran before {op.after}"
        assert dependencies(plan)[index] <= done, f"{op.key} ran before what the executor waits for"
        simulate(state, op, unknowns)
        done.add(index)
        for gid, uid in alive:
            assert uid in state[gid], f"user {uid} of {gid} vanished after {op.key}"
    return state


def dependency_order(plan: Plan, rng: random.Random | None) -> list[int]:
    """An order the executor may run (``after`` plus its own rules, ``order.dependencies``): random, or
    (rng None) the most hostile one, deletes as early as their dependencies allow."""
    waiting = {i: set(need) for i, need in enumerate(dependencies(plan))}
    done: set[int] = set()
    order = []
    while waiting:
        ready = sorted(i for i, deps in waiting.items() if deps <= done)
        assert ready, "the dependencies have a cycle"
        pick = rng.choice(ready) if rng else max(ready, key=lambda i: plan.operations[i].kind.phase)
        del waiting[pick]
        done.add(pick)
        order.append(pick)
    return order


def expected(state: State, desired: Desired) -> State:
    """The library the manifest asks for, given where it started."""
    result = copy_state(state)
    policy = desired.policy
    listed = {group.group_id for group in desired.groups}
    for group in desired.groups:
        before = result.setdefault(group.group_id, {})
        after = {} if group.prune else dict(before)
        for user in group.users:
            if not user.images:
                after.pop(user.user_id, None)
                continue
            faces = [TOKEN[_name(image)] for image in user.images]
            old = before.get(user.user_id)
            if old is not None and not group.prune:
                faces += [t for t in old[0] if t not in faces]
            info = user.user_info
            if info is None:
                info = old[1] if old is not None else None  # unmanaged: whatever it was (None: any)
            after[user.user_id] = [sorted(faces), info]
        result[group.group_id] = after
    if policy.delete_unlisted_groups:
        for gid in list(result):
            if gid not in listed and not gid.startswith(LOCK_GROUP_PREFIX) and gid not in policy.protected_groups:
                del result[gid]
    return result


def normalised(state: State, reference: State) -> State:
    """Sorted faces; user_info of users whose expected user_info is None (unmanaged, new) ignored."""
    out = {}
    for gid, users in state.items():
        out[gid] = {}
        for uid, (faces, info) in users.items():
            want = reference.get(gid, {}).get(uid)
            out[gid][uid] = [sorted(faces), None if want is not None and want[1] is None else info]
    return out


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(), st.sampled_from(["lenient", "harsh"]))
def test_plan_converges_in_any_dependency_order(scenario, unknowns):
    state, desired, rng = scenario
    if unknowns == "harsh":
        state, desired = harsh_valid(state, desired)
    live = live_of(state, desired)
    plan = make_plan(desired, live, created_at="t")
    # a face given to one user once another lost it (a move, directly or through a staging copy): the
    # only waits on a later phase, checked below
    moves = any(plan.operations[dep].kind.phase > op.kind.phase for op in plan.operations for dep in op.after)
    for index, op in enumerate(plan.operations):
        assert all(dep < index for dep in op.after)
        for dep in op.after:  # the phases' order, but for a face given to one user once another lost it
            other = plan.operations[dep]
            assert other.kind.phase <= op.kind.phase or (
                other.kind.is_delete and other.group_id == op.group_id and other.user_id != op.user_id), \
                (other.key, op.key)
        for expect in op.expects:  # every expect holds on the library the plan was made on
            if expect.user_id is None:
                assert (expect.group_id in state) == expect.exists
                continue
            user = state.get(expect.group_id, {}).get(expect.user_id)
            assert (user is not None) == expect.exists
            if expect.face_tokens is not None:
                assert tuple(sorted(user[0])) == expect.face_tokens
            if expect.user_info is not None:
                assert user[1] == expect.user_info
    if not moves:
        assert [op.kind.phase for op in plan.operations] == sorted(op.kind.phase for op in plan.operations)

    want = expected(state, desired)
    orders = list(range(len(plan.operations))), dependency_order(plan, rng), dependency_order(plan, None)
    for order in orders:
        result = run_in_order(plan, state, desired, order, unknowns)
        assert normalised(result, want) == normalised(want, want)
        again = make_plan(resolved(desired, result), live_of(result, desired), created_at="t")
        assert again.operations == (), [op.key for op in again.operations]


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_plan_is_deterministic_and_never_costlier_than_naive(scenario):
    state, desired, _ = scenario
    live = live_of(state, desired)
    first = make_plan(desired, live, created_at="t")
    assert first == make_plan(desired, live, created_at="t")
    naive = 0  # create groups, add every missing face, delete every extra face/user one by one
    for group in desired.groups:
        before = state.get(group.group_id)
        naive += before is None
        before = before or {}
        named = {user.user_id for user in group.users}
        for user in group.users:
            old = before.get(user.user_id, [[], ""])
            wanted = {TOKEN[_name(image)] for image in user.images}
            naive += len(wanted - set(old[0]))
            changed_info = user.user_info is not None and user.user_id in before and old[1] != user.user_info
            extra = set(old[0]) - wanted
            naive += len(extra) if group.prune else 0
            if changed_info and wanted <= set(old[0]):  # user/update, then re-add the other faces
                naive += len(wanted) + (0 if group.prune else len(extra))
        naive += sum(1 for uid in before if uid not in named) if group.prune else 0
    listed = {group.group_id for group in desired.groups}
    if desired.policy.delete_unlisted_groups:
        naive += sum(1 for gid in state if gid not in listed and not gid.startswith(LOCK_GROUP_PREFIX)
                     and gid not in desired.policy.protected_groups)
    # a face known only by token needs a staging copy when an update drops it: the staging group is created
    # and deleted once per group (2 calls), and each user staged in it costs one user/copy. (Not 3 per
    # group: two users of one group staged for a user_info change cost 2 + 2 copies, which the naive
    # count of re-adds cannot pay for.)
    staged = {op.group_id for op in first.operations if is_stage_group(op.group_id)}
    stage_copies = sum(op.kind is OpKind.COPY_USER and is_stage_group(op.group_id) for op in first.operations)
    assert first.calls <= naive + 2 * len(staged) + stage_copies


@settings(max_examples=300, deadline=None)
@given(scenarios(), st.sets(st.sampled_from(USERS), min_size=1))
def test_narrowed_plans_touch_only_the_chosen_users(scenario, chosen):
    from facesync.plan.planner import narrow

    state, desired, _ = scenario
    named = {user.user_id for group in desired.groups for user in group.users}
    chosen &= named
    if not chosen:
        return
    plan = make_plan(narrow(desired, users=chosen), live_of(state, desired), created_at="t")
    for op in plan.operations:
        if is_stage_group(op.group_id):  # its own staging group, made and removed for a chosen user
            assert op.user_id is None or op.user_id in chosen
            continue
        assert op.kind is not OpKind.DELETE_GROUP
        assert op.kind is OpKind.CREATE_GROUP or op.user_id in chosen, op.key
    full = make_plan(desired, live_of(state, desired), created_at="t")
    # A face moving between two users of a group involves both: narrowed to one of them, the other keeps
    # the face, so neither is compared (their end state is, by the apply property tests).
    # So is a user staged because a face it loses goes to another user by face_token: narrowed to it alone,
    # nobody takes that face, and the staging copy is not needed.
    movers = {(op.group_id, op.user_id) for op in full.operations if op.reason.startswith("moves ")}
    movers |= {(op.group_id, other) for op in full.operations if op.reason.startswith("moves ")
               for other in op.reason.split(" user ", 1)[1].split(", ")}
    movers |= {(op.src_group_id, op.user_id) for op in full.operations
               if op.kind is OpKind.COPY_USER and is_stage_group(op.group_id) and op.reason == STAGE_MOVE}

    def compared(op) -> bool:  # a staging copy belongs to the user in its group
        return (op.src_group_id if is_stage_group(op.group_id) else op.group_id, op.user_id) not in movers

    # the chosen users get exactly what the full plan gives them, prune and staging included
    assert sorted(op.key for op in plan.operations if op.user_id and compared(op)) == \
        sorted(op.key for op in full.operations if op.user_id in chosen and compared(op))
