"""Reading the library back: after an apply (did it end as the plan wanted?) and before applying a saved
plan (do the live facts it was planned on still hold?).

After an apply, ``mode`` says what is read back:

- ``quick`` (the default): the groups created or deleted (one group/getlist), and every user whose end
  state the answers do not already prove: a user with an "already" answer, a user/update or user/copy
  (their effect on the other faces is the service's, not the answer's), or a call that was retried (a
  lost answer may hide a second effect). A plain successful user/add, face/delete or user/delete answer
  is proof of its own effect, so re-reading it would only spend quota: on Baidu every call is billed.
- ``full``: every user the plan touched, with face/getlist, and user/get @ALL where user_info was set.
- ``off``: nothing.

Users with a failed or skipped operation are not verified: their failure is already reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from facesync.api.errors import GroupNotFoundError
from facesync.api.protocol import FaceLibrary, iter_group_ids, iter_user_ids
from facesync.apply.order import subject_of
from facesync.apply.results import ALREADY, OpResult
from facesync.plan.ops import Expect, OpKind, Plan
from facesync.refresh import read_faces, read_memberships
from facesync.words import counted

VERIFY_MODES = ("quick", "full", "off")

Subject = tuple[str, str]  # (group_id, user_id)


@dataclass
class _Wanted:
    exists: bool | None = None
    exact: set[str] | None = None  # the whole face set, when the plan knows it
    must_have: set[str] = field(default_factory=set)
    must_not: set[str] = field(default_factory=set)
    user_info: str | None = None


def wanted_state(plan: Plan, results: Iterable[OpResult]) -> tuple[dict[str, bool], dict[Subject, _Wanted]]:
    """What the plan leaves behind, replayed from the operations that succeeded (pure, linear).

    Users with a failed or skipped operation, and users of deleted groups, are left out.
    """
    by_index = {r.index: r for r in results}
    incomplete = {subject_of(r.operation) for r in by_index.values() if not r.succeeded} - {None}
    expected = _expects_by_subject(plan)
    groups: dict[str, bool] = {}
    users: dict[Subject, _Wanted] = {}

    def state(subject: Subject) -> _Wanted:
        if subject not in users:
            wanted = _Wanted()
            for expect in expected.get(subject, ()):
                if not expect.exists:
                    wanted.exact = set()
                elif expect.face_tokens is not None and wanted.exact is None:
                    wanted.exact = set(expect.face_tokens)
            users[subject] = wanted
        return users[subject]

    for i, op in enumerate(plan.operations):
        result = by_index.get(i)
        if result is None or not result.succeeded:
            continue
        if op.kind is OpKind.CREATE_GROUP:
            groups[op.group_id] = True
            continue
        if op.kind is OpKind.DELETE_GROUP:
            groups[op.group_id] = False
            continue
        subject = subject_of(op)
        if subject is None:
            continue
        w = state(subject)
        token = result.face_token or (op.face.face_token if op.face else None)
        if op.kind in (OpKind.ADD_FACE, OpKind.UPDATE_USER):
            if op.kind is OpKind.UPDATE_USER:
                w.must_not |= (w.exact or set()) | w.must_have
                w.exact = set()  # user/update leaves exactly the one new face
                w.must_have = set()
            w.exists = True
            if token:
                w.must_have.add(token)
                w.must_not.discard(token)
                if w.exact is not None:
                    w.exact.add(token)
            elif w.exact is not None and op.kind is OpKind.ADD_FACE:
                w.exact = None
            if op.user_info is not None:
                w.user_info = op.user_info
        elif op.kind is OpKind.COPY_USER:
            src = state((op.src_group_id or "", op.user_id or ""))
            w.exists = True
            w.exact = set(src.exact) if src.exact is not None else None
            w.must_have |= src.must_have
            w.user_info = src.user_info
        elif op.kind is OpKind.DELETE_FACE and op.face_token:
            w.must_have.discard(op.face_token)
            w.must_not.add(op.face_token)
            if w.exact is not None:
                w.exact.discard(op.face_token)
        elif op.kind is OpKind.DELETE_USER:
            users[subject] = _Wanted(exists=False, exact=set())

    deleted = {g for g, keep in groups.items() if not keep}
    users = {s: w for s, w in users.items() if s not in incomplete and s[0] not in deleted}
    return groups, users


def _expects_by_subject(plan: Plan) -> dict[Subject, list[Expect]]:
    expected: dict[Subject, list[Expect]] = {}
    for op in plan.operations:
        for expect in op.expects:
            if expect.user_id is not None:
                expected.setdefault((expect.group_id, expect.user_id), []).append(expect)
    return expected


def doubtful_subjects(results: Iterable[OpResult]) -> set[Subject]:
    """The users whose end state the answers do not prove (see the module docstring)."""
    doubtful: set[Subject] = set()
    for result in results:
        op = result.operation
        subject = subject_of(op)
        if subject is None:
            continue
        if result.outcome == ALREADY or result.attempts > 1 or op.kind in (OpKind.UPDATE_USER, OpKind.COPY_USER):
            doubtful.add(subject)
            if op.kind is OpKind.COPY_USER and op.src_group_id:
                doubtful.add((op.src_group_id, subject[1]))
    return doubtful


def verify_results(plan: Plan, library: FaceLibrary, results: Iterable[OpResult], *,
                   concurrency: int = 8, mode: str = "quick") -> tuple[str, ...]:
    """Read back what was touched; each string says one thing that is not as the plan wanted."""
    results = tuple(results)
    groups, users = wanted_state(plan, results)
    if mode == "quick":
        doubtful = doubtful_subjects(results)
        users = {s: w for s, w in users.items() if s in doubtful}
    problems: list[str] = []
    if groups:
        present = set(iter_group_ids(library))
        for group_id, keep in sorted(groups.items()):
            if keep and group_id not in present:
                problems.append(f"group {group_id}: missing, the plan created it")
            if not keep and group_id in present:
                problems.append(f"group {group_id}: still exists, the plan deleted it")
    subjects = sorted(users)
    info_users = sorted({u for (_, u), w in users.items() if w.user_info is not None and w.exists})
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        faces = dict(zip(subjects, pool.map(lambda s: read_faces(library, *s), subjects)))
        infos = dict(zip(info_users, pool.map(lambda u: read_memberships(library, u) or {}, info_users)))
    for subject in subjects:
        problems.extend(_compare(subject, users[subject], faces[subject], infos.get(subject[1], {})))
    return tuple(problems)


def _compare(subject: Subject, wanted: _Wanted, listed: tuple[str, ...] | None, infos: dict[str, str]) -> list[str]:
    where = f"{subject[0]}/{subject[1]}"
    faces = set(listed) if listed is not None else None
    if wanted.exists is False:
        return [f"user {where}: still exists with {counted(len(faces), 'face')}, the plan deleted it"] if faces else []
    if faces is None:
        return [f"user {where}: missing, the plan wanted it with faces"] if wanted.exists else []
    problems = []
    for token in sorted(wanted.must_have - faces):
        problems.append(f"user {where}: face {token} missing")
    for token in sorted(wanted.must_not & faces):
        problems.append(f"user {where}: face {token} still present, the plan removed it")
    if wanted.exact is not None:
        for token in sorted(faces - wanted.exact - wanted.must_not):
            problems.append(f"user {where}: face {token} present, the plan did not want it")
        for token in sorted(wanted.exact - faces - wanted.must_have):
            problems.append(f"user {where}: face {token} missing")
    if wanted.user_info is not None and infos.get(subject[0]) != wanted.user_info:
        problems.append(f"user {where}: user_info is {infos.get(subject[0])!r}, the plan set {wanted.user_info!r}")
    return problems


def stale_facts(plan: Plan, library: FaceLibrary, *, concurrency: int = 8) -> tuple[str, ...]:
    """The ``expects`` of a saved plan that no longer hold; empty when the plan still fits the library.

    Whether users exist comes from the groups' user lists (one call per 1000 users); face lists are read
    only for users whose faces the plan depends on, user_info only where the plan depends on it.
    """
    expects = list(dict.fromkeys(expect for op in plan.operations for expect in op.expects))
    if not expects:
        return ()
    moved: list[str] = []
    present = set(iter_group_ids(library))
    for e in (e for e in expects if e.user_id is None):
        if e.exists and e.group_id not in present:
            moved.append(f"group {e.group_id}: the plan expected it to exist; it does not")
        if not e.exists and e.group_id in present:
            moved.append(f"group {e.group_id}: the plan expected it not to exist; it does")
    user_facts = sorted((e for e in expects if e.user_id is not None), key=lambda e: (e.group_id, e.user_id))
    listed_groups = sorted({e.group_id for e in user_facts} & present)
    face_subjects = sorted({(e.group_id, e.user_id) for e in user_facts if e.exists and e.face_tokens is not None})
    info_users = sorted({e.user_id for e in user_facts if e.exists and e.user_info is not None})
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        members = dict(zip(listed_groups, pool.map(lambda g: _user_ids(library, g), listed_groups)))
        faces = dict(zip(face_subjects, pool.map(lambda s: read_faces(library, *s), face_subjects)))
        infos = dict(zip(info_users, pool.map(lambda u: read_memberships(library, u) or {}, info_users)))
    for e in user_facts:
        where = f"{e.group_id}/{e.user_id}"
        exists = e.user_id in members.get(e.group_id, ()) and faces.get((e.group_id, e.user_id), ()) is not None
        if exists != e.exists:
            state = "to exist; it does not" if e.exists else "not to exist; it does"
            moved.append(f"user {where}: the plan expected it {state}")
            continue
        if not e.exists:
            continue
        have = faces.get((e.group_id, e.user_id))
        if e.face_tokens is not None and have is not None and set(have) != set(e.face_tokens):
            gone = sorted(set(e.face_tokens) - set(have))
            new = sorted(set(have) - set(e.face_tokens))
            detail = ", ".join(filter(None, [f"gone: {' '.join(gone)}" if gone else "",
                                             f"new: {' '.join(new)}" if new else ""]))
            moved.append(f"user {where}: faces changed ({detail})")
        if e.user_info is not None:
            info = infos.get(e.user_id, {}).get(e.group_id)
            if info != e.user_info:
                moved.append(f"user {where}: user_info is now {info!r}, the plan expected {e.user_info!r}")
    return tuple(dict.fromkeys(moved))


def _user_ids(library: FaceLibrary, group_id: str) -> frozenset[str]:
    try:
        return frozenset(iter_user_ids(library, group_id))
    except GroupNotFoundError:  # deleted since group/getlist
        return frozenset()
