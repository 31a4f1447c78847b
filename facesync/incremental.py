"""Incremental refresh: plan against the state (``state.py``), reading only what may have moved.

A full refresh costs one face/getlist per managed user and one user/get per user whose user_info is
managed: 200,000 calls for a 100,000-user library that is in sync. An incremental one reads:

1. ``group/getlist`` and every managed group's ``group/getusers`` pages, as a full refresh does (one call
   per 1,000 users): every user added or removed out of band, and every group, is seen at once;
2. face/getlist (each managed group the user is named in) and user/get (once, when its user_info is
   managed) only for the users that
   - the state does not know, or knows without a fact this manifest needs (appeared, newly managed);
   - have a manifest entry that changed since the state read them (``state.entry_digest``);
   - are the ``audit`` users verified least recently (the default is ``default_audit``: 1 % of the
     named users, at least one), so that every user is read again within a bounded number of runs;
3. then the plan is made, and every user whose facts an operation depends on (each ``expects`` with
   face_tokens or user_info) and that was taken from the state is read, and the plan made again, until
   every such fact was read in this run. A plan therefore never writes on a fact it did not just read:
   the state decides only which users are left alone, never what is written to one.

What it costs: drift that no operation touches (a face deleted out of band from a user in sync) goes
unseen until that user's audit turn; that is the bargain, and ``Trust`` says how old the oldest trusted
fact is. Without a state, or with a state that holds nothing for these groups, it is a full refresh, and
``Trust.full_because`` says why.

Users taken from the state keep the facts the state has. Deleted users (named nowhere) are not read, as
in a full refresh. The users read and the users found gone are recorded into the state (``observed``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from facesync import progress as progress_bars
from facesync.api.protocol import FaceLibrary
from facesync.apply.results import DONE, OpResult
from facesync.apply.verify import stale_facts
from facesync.cache import TokenCache
from facesync.clock import utc_text
from facesync.errors import PlanStaleError
from facesync.model import Desired, Live, LiveGroup, LiveUser, is_own_group
from facesync.plan.effects import user_effect
from facesync.plan.ops import OpKind, Plan
from facesync.plan.planner import make_plan, user_info_to_read
from facesync.refresh import (
    Scope,
    _users_of,
    listed_group_ids,
    read_faces,
    read_memberships,
    scope_of,
    users_giving_tokens,
)
from facesync.resolve import ResolveStats, resolve_images
from facesync.snapshot import age_text
from facesync.state import Known, State, Subject, default_path, entry_digests, load_state, record
from facesync.words import counted

FULL, INCREMENTAL = "full", "incremental"
AUDIT_SHARE = 0.01  # the default audit: 1 % of the named users a run (every user re-read within 100 runs)


def default_audit(users: int) -> int:
    """Users audited a run when ``--audit`` is not given: 1 % of ``users``, at least one."""
    return max(1, math.ceil(users * AUDIT_SHARE)) if users else 0


@dataclass(frozen=True)
class Trust:
    """What a plan's live state rests on, for the reader: users read now, users taken from the state,
    and when the oldest fact taken from the state was read (None: none was)."""

    mode: str
    users_read: int = 0
    users_from_state: int = 0
    audited: int = 0
    oldest_verified_at: float | None = None
    full_because: str = ""

    def describe(self, now: float | None = None) -> str:
        """``Plan.live_source``: what the plan trusted, in words."""
        if self.mode == FULL:
            return f"refresh (full: {self.full_because})" if self.full_because else "refresh"
        text = (f"incremental refresh: {counted(self.users_read, 'user')} read "
                f"({self.audited} for the audit), {counted(self.users_from_state, 'user')} from the state")
        if self.oldest_verified_at is not None:
            age = (time.time() if now is None else now) - self.oldest_verified_at
            text += f", the oldest verified at {utc_text(self.oldest_verified_at)} ({age_text(age)})"
        return text

    def as_dict(self) -> dict[str, object] | None:
        """``Plan.refresh`` (the plan file's ``refresh``): None after a full refresh."""
        if self.mode == FULL:
            return None
        oldest = utc_text(self.oldest_verified_at) if self.oldest_verified_at is not None else None
        return {"mode": self.mode, "users_read": self.users_read, "users_from_state": self.users_from_state,
                "audited": self.audited, "oldest_verified_at": oldest}


@dataclass
class _Reads:
    """Facts read in this run: faces by (group, user) (None: gone since the listing), memberships by
    user_id (group → user_info; None: gone), and when each read began."""

    faces: dict[Subject, tuple[str, ...] | None] = field(default_factory=dict)
    infos: dict[str, dict[str, str] | None] = field(default_factory=dict)
    began: dict[str, float] = field(default_factory=dict)  # user_id -> start of the wave that read it


@dataclass(frozen=True)
class Listing:
    """Wave 1: every group id (lock groups left out), and the users of each managed group that exists."""

    group_ids: tuple[str, ...]
    members: dict[str, tuple[str, ...]]
    began: float


@dataclass(frozen=True)
class IncrementalPlan:
    desired: Desired  # resolved
    live: Live
    plan: Plan
    stats: ResolveStats
    trust: Trust
    fresh: frozenset[Subject]  # (group, user) whose faces were read in this run
    fresh_info: frozenset[str]  # user_ids whose user_info was read in this run
    observed: Mapping[Subject, Known]  # what to record into the state
    read_at: Mapping[str, float]  # user_id -> when the wave that read it began


def read_listing(library: FaceLibrary, desired: Desired, *, concurrency: int = 8,
                 clock: Callable[[], float] = time.time) -> Listing:
    """group/getlist, then getusers of each managed group that exists (a group gone meanwhile: absent)."""
    began = clock()
    group_ids = listed_group_ids(library)
    existing = set(group_ids)
    managed = [group.group_id for group in desired.groups if group.group_id in existing]
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(managed) or 1))) as pool:
        listed = dict(zip(managed, pool.map(lambda group_id: _users_of(library, group_id), managed)))
    return Listing(group_ids, {gid: tuple(users) for gid, users in listed.items() if users is not None}, began)


class _Reader:
    """One incremental read: the listing, then the users chosen to be read, then what a plan asks for."""

    def __init__(self, library: FaceLibrary, desired: Desired, state: State, pool: ThreadPoolExecutor, bar,
                 clock: Callable[[], float], concurrency: int):
        self.library, self.state, self.pool, self.bar, self.clock = library, state, pool, bar, clock
        self.desired = desired
        self.listing = read_listing(library, desired, concurrency=concurrency, clock=clock)
        self.scope = scope_of(desired)
        self.entries = entry_digests(desired)
        self.reads = _Reads()
        self.audited: set[str] = set()

    def first_reads(self, audit: int | None) -> None:
        """The users the state cannot answer for, and the audit; then, as a full refresh does, the users
        only to be deleted that may give a face named by face_token to another (``users_giving_tokens``)."""
        chosen = _unknown_or_changed(self.listing, self.scope, self.entries, self.state)
        budget = default_audit(_count_named(self.listing, self.scope)) if audit is None else audit
        self.audited = _audit(self.listing, self.scope, self.state, chosen, budget)
        self.read_users(chosen | self.audited)
        faces = {(gid, uid): user.face_tokens for gid, group in self.live().groups.items()
                 for uid, user in group.users.items()}
        giving = users_giving_tokens(self.desired, self.listing.members, faces)
        if giving:
            self.read_users(set(), faces=giving)

    def read_users(self, user_ids: set[str], faces: Iterable[Subject] = (), infos: Iterable[str] = ()) -> None:
        """Faces of ``user_ids`` wherever the manifest names them (and of ``faces``), user_info of those
        whose user_info is managed (and of ``infos``)."""
        subjects = set(faces) | _named_subjects(self.listing, self.scope, user_ids)
        managed = {uid for uid in user_ids if self.scope.reads_user_info(uid)}
        _read(self.pool, self.library, subjects, set(infos) | managed, self.reads,
              self.bar, self.clock)

    def live(self) -> Live:
        return _live(self.listing, self.scope, self.state, self.reads, self.library.identity)

    def trust(self) -> Trust:
        return _trust(self.listing, self.scope, self.state, self.reads, len(self.audited))


@contextmanager
def _reader(library: FaceLibrary, desired: Desired, state: State, *, concurrency: int, progress: bool | None,
            clock: Callable[[], float]) -> Iterator[_Reader]:
    with progress_bars.progress("Reading the library", enabled=progress) as bar, \
            ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        yield _Reader(library, desired, state, pool, bar, clock, concurrency)


def read_incremental(library: FaceLibrary, desired: Desired, state: State, *, audit: int | None = None,
                     concurrency: int = 8, progress: bool | None = None,
                     clock: Callable[[], float] = time.time) -> tuple[Live, Trust, dict[Subject, Known]]:
    """The Live a full refresh of ``desired`` would read, reading only the users the state cannot answer
    for and the audit (``facesync snapshot``: no plan, so no user it touches). Returns what to record."""
    with _reader(library, desired, state, concurrency=concurrency, progress=progress, clock=clock) as reader:
        reader.first_reads(audit)
    trust = reader.trust()
    live = replace(reader.live(), source=trust.describe(clock()))
    return live, trust, observe(reader.listing, desired, live, state, reader.reads)


def plan_incremental(desired: Desired, library: FaceLibrary, cache: TokenCache, state: State, *,
                     audit: int | None = None, qps: float | None = None, concurrency: int = 8,
                     force: bool = False, reupload: bool = False, progress: bool | None = None,
                     clock: Callable[[], float] = time.time) -> IncrementalPlan:
    """The plan of ``desired`` (loaded, narrowed) reading only what may have moved since ``state``: the
    first reads, then every fact the plan's operations depend on that came from the state, planning
    again until there is none (each round reads at least one fact not read before, so it ends)."""
    with _reader(library, desired, state, concurrency=concurrency, progress=progress, clock=clock) as reader:
        reader.first_reads(audit)
        resolution = resolve_images(desired, reader.live(), library, cache, concurrency=concurrency,
                                    progress=progress)
        resolved = resolution.desired
        while True:
            live = reader.live()
            unread_info = user_info_to_read(resolved, live) - reader.reads.infos.keys()
            if unread_info:
                reader.read_users(set(), infos=unread_info)
                live = reader.live()
            plan = make_plan(resolved, live, qps=qps, force=force, reupload=reupload)
            faces, infos = trusted_dependencies(plan, reader.reads.faces.keys(), reader.reads.infos.keys())
            if not faces and not infos:
                break
            reader.read_users({uid for _gid, uid in faces} | infos, faces=faces, infos=infos)
    trust = reader.trust()
    live = replace(live, source=trust.describe(clock()))
    plan = replace(plan, live_source=live.source, refresh=trust.as_dict())
    return IncrementalPlan(resolved, live, plan, resolution.stats, trust, frozenset(reader.reads.faces),
                           frozenset(reader.reads.infos), observe(reader.listing, resolved, live, state, reader.reads),
                           dict(reader.reads.began))


# -- choosing whom to read ----------------------------------------------------------------------------


def _count_named(listing: Listing, scope: Scope) -> int:
    return len({uid for gid, users in listing.members.items() for uid in users if scope.reads_faces(gid, uid)})


def _unknown_or_changed(listing: Listing, scope: Scope, entries: Mapping[Subject, str], state: State) -> set[str]:
    """user_ids the state cannot answer for: unknown, lacking a needed fact, or whose entry changed."""
    chosen: set[str] = set()
    for gid, users in listing.members.items():
        for uid in users:
            known = state.known((gid, uid))
            faces, info = scope.reads_faces(gid, uid), scope.reads_user_info(uid)
            if not faces and not info:
                continue  # to be pruned, or left alone: a full refresh reads nothing of it either
            if (known is None or (info and known.user_info is None)
                    or (faces and (known.face_tokens is None or known.entry != entries[(gid, uid)]))):
                chosen.add(uid)
    return chosen


def _audit(listing: Listing, scope: Scope, state: State, chosen: set[str], budget: int) -> set[str]:
    """The ``budget`` named users verified least recently (ties by id), among those not read anyway."""
    oldest: dict[str, float] = {}
    for gid, users in listing.members.items():
        for uid in users:
            known = state.known((gid, uid))
            if uid in chosen or not scope.reads_faces(gid, uid) or known is None:
                continue
            oldest[uid] = min(oldest.get(uid, known.verified_at), known.verified_at)
    return set(sorted(oldest, key=lambda uid: (oldest[uid], uid))[:max(0, budget)])


def _named_subjects(listing: Listing, scope: Scope, user_ids: Iterable[str]) -> set[Subject]:
    """Each listed (group, user) of ``user_ids`` that the manifest names: whose faces a full refresh reads."""
    user_ids = set(user_ids)
    return {(gid, uid) for gid, users in listing.members.items() for uid in users
            if uid in user_ids and scope.reads_faces(gid, uid)}


def trusted_dependencies(plan: Plan, fresh: Iterable[Subject], fresh_info: Iterable[str]
                         ) -> tuple[set[Subject], set[str]]:
    """The facts an operation depends on (an ``expects`` with face_tokens, or with user_info) that were
    not read in this run: (group, user) whose faces, and user_ids whose user_info. Existence is not
    among them: it comes from this run's listing."""
    fresh, fresh_info = set(fresh), set(fresh_info)
    faces: set[Subject] = set()
    infos: set[str] = set()
    for op in plan.operations:
        for expect in op.expects:
            if expect.user_id is None or not expect.exists:
                continue
            if expect.face_tokens is not None and (expect.group_id, expect.user_id) not in fresh:
                faces.add((expect.group_id, expect.user_id))
            if expect.user_info is not None and expect.user_id not in fresh_info:
                infos.add(expect.user_id)
    return faces, infos


# -- reading ------------------------------------------------------------------------------------------


def _read(pool: ThreadPoolExecutor, library: FaceLibrary, subjects: Iterable[Subject], info_ids: Iterable[str],
          reads: _Reads, bar, clock: Callable[[], float]) -> None:
    """face/getlist of each (group, user) of ``subjects`` and user/get of each of ``info_ids`` not read
    yet; each user read is stamped with the time this wave began."""
    began = clock()
    subjects = sorted(set(subjects) - reads.faces.keys())
    infos = sorted(set(info_ids) - reads.infos.keys())
    bar.add_total(len(subjects) + len(infos))
    for subject, faces in zip(subjects, pool.map(lambda s: _advancing(bar, read_faces, library, *s), subjects)):
        reads.faces[subject] = faces
    for uid, memberships in zip(infos, pool.map(lambda u: _advancing(bar, read_memberships, library, u), infos)):
        reads.infos[uid] = memberships
    for uid in {uid for _gid, uid in subjects} | set(infos):
        reads.began.setdefault(uid, began)


def _advancing(bar, read, *args):
    try:
        return read(*args)
    finally:
        bar.advance()


def _live(listing: Listing, scope: Scope, state: State, reads: _Reads, identity: str) -> Live:
    """The Live a full refresh would build, with facts read now where there are, else the state's."""
    groups: dict[str, LiveGroup] = {}
    for gid, users in listing.members.items():
        live_users: dict[str, LiveUser] = {}
        for uid in users:
            known = state.known((gid, uid))
            faces: tuple[str, ...] | None = None
            if (gid, uid) in reads.faces:
                faces = reads.faces[(gid, uid)]
                if faces is None:  # gone since getusers listed it
                    continue
            elif scope.reads_faces(gid, uid):
                faces = known.face_tokens if known is not None else None
            info = None
            if uid in reads.infos:
                memberships = reads.infos[uid]
                if memberships is None or gid not in memberships:  # gone since getusers listed it
                    continue
                info = memberships[gid]
            elif scope.reads_user_info(uid) and known is not None:
                info = known.user_info
            live_users[uid] = LiveUser(uid, faces, info)
        groups[gid] = LiveGroup(gid, live_users)
    return Live(group_ids=listing.group_ids, groups=groups, identity=identity, fetched_at=listing.began,
                source="refresh")


# -- what the plan trusted, and what to record --------------------------------------------------------


def _trust(listing: Listing, scope: Scope, state: State, reads: _Reads, audited: int) -> Trust:
    read = set(reads.began)
    from_state: set[str] = set()
    oldest: float | None = None
    for gid, users in listing.members.items():
        for uid in users:
            if uid in read or not (scope.reads_faces(gid, uid) or scope.reads_user_info(uid)):
                continue
            known = state.known((gid, uid))
            if known is None:
                continue
            from_state.add(uid)
            oldest = known.verified_at if oldest is None else min(oldest, known.verified_at)
    return Trust(INCREMENTAL, users_read=len(read), users_from_state=len(from_state), audited=audited,
                 oldest_verified_at=oldest)


def observe(listing: Listing, desired: Desired, live: Live, state: State | None, reads: _Reads | None = None,
            began: float | None = None) -> dict[Subject, Known]:
    """What a refresh saw, for ``state.record``: each (group, user) whose facts were read now (all of them
    after a full refresh: ``reads`` None, read at ``began``), and a tombstone for each user the state knew
    in a managed group that the listing no longer shows."""
    entries = entry_digests(desired)
    observed: dict[Subject, Known] = {}
    for gid, group in live.groups.items():
        for uid, user in group.users.items():
            if reads is None:
                when = began if began is not None else listing.began
            elif (gid, uid) in reads.faces or uid in reads.infos:
                when = reads.began[uid]
            else:
                continue
            if user.face_tokens is None and user.user_info is None:
                continue  # nothing was read of it (a user only to be deleted)
            observed[(gid, uid)] = Known(user.face_tokens, user.user_info, when, entries.get((gid, uid), ""))
    if state is not None:
        existing = set(listing.group_ids)
        for (gid, uid), known in state.users.items():
            if known.gone or gid not in {g.group_id for g in desired.groups}:
                continue
            if gid not in existing or uid not in listing.members.get(gid, ()):
                observed[(gid, uid)] = Known(None, None, listing.began, gone=True)
    return observed


def listing_of(live: Live, began: float) -> Listing:
    """The listing a full refresh's Live carries (every managed group that exists, with its users)."""
    return Listing(live.group_ids, {gid: tuple(group.users) for gid, group in live.groups.items()}, began)


# -- the entry point: plan with the state, full or incremental ----------------------------------------


@dataclass(frozen=True)
class Tracked:
    """A plan made with the state: the plan's inputs, what it trusted, and where the state is kept (so
    that an apply of it records what it wrote)."""

    desired: Desired  # resolved
    live: Live
    plan: Plan
    stats: ResolveStats
    trust: Trust
    state_file: Path
    read_at: Mapping[str, float]  # user_id -> when the facts the plan used of it were read

    fresh: frozenset[Subject] | None = None  # (group, user) whose faces were read now (None: all of them)
    fresh_info: frozenset[str] | None = None  # user_ids whose user_info was read now (None: all of them)

    def unread_dependencies(self) -> tuple[set[Subject], set[str]]:
        """Facts the plan's operations depend on that were taken from the state (none, by construction:
        apply checks it before its first write)."""
        if self.fresh is None:
            return set(), set()
        return trusted_dependencies(self.plan, self.fresh, self.fresh_info or ())

    def check_before_write(self, library: FaceLibrary, *, concurrency: int = 8) -> None:
        """Before the first write of the plan: every fact an operation depends on was read in this run.
        The incremental refresh guarantees it; should one have come from the state all the same, every
        fact is checked against the library, and ``PlanStaleError`` raised if one moved, as for a
        reviewed plan file."""
        faces, infos = self.unread_dependencies()
        if not faces and not infos:
            return
        moved = stale_facts(self.plan, library, concurrency=concurrency)
        if moved:
            shown = "\n".join(f"  - {line}" for line in moved[:50])
            raise PlanStaleError(f"the state this plan trusted is out of date:\n{shown}",
                                 hint="apply again: it reads these users afresh (or use --refresh full)")

    def record_apply(self, results: Iterable[OpResult]) -> None:
        """Record into the state what an apply of ``plan`` wrote (see ``observe_apply``)."""
        entries = entry_digests(self.desired)
        read_at = {uid: self.read_at.get(uid, self.live.fetched_at) for _gid, uid in _subjects(results)}
        record(self.state_file, self.live.identity, observe_apply(results, read_at, entries))


def plan_tracked(desired: Desired, library: FaceLibrary, cache: TokenCache, *,
                 plan_full: Callable[[], tuple[Desired, Live, Plan, ResolveStats]],
                 finish: Callable[[Plan, Desired], Plan], mode: str | None = None,
                 state_file: str | os.PathLike | None = None, audit: int | None = None, qps: float | None = None,
                 concurrency: int = 8, force: bool = False, reupload: bool = False, progress: bool | None = None,
                 clock: Callable[[], float] = time.time) -> Tracked:
    """Plan ``desired`` with a ``mode`` refresh (None: the manifest's ``policy.refresh``), and record what
    was read into the state (``state_file``, else the library's file in the cache folder). Incremental
    without a state that knows any managed group is a full refresh that says so.

    ``plan_full``: the caller's full refresh and plan (resolved desired, live, finished plan, stats);
    ``finish``: what the caller adds to a plan it made (pinned uploads, names), for the incremental one."""
    identity = library.identity
    path = Path(state_file) if state_file else default_path(identity)
    state = load_state(path, identity)
    trust = _full_trust(mode or desired.policy.refresh, state, desired, path)
    if trust is None:
        made = plan_incremental(desired, library, cache, state, audit=audit, qps=qps, concurrency=concurrency,
                                force=force, reupload=reupload, progress=progress, clock=clock)
        record(path, identity, made.observed)
        plan = finish(made.plan, made.desired)
        return Tracked(made.desired, made.live, plan, made.stats, made.trust, path, made.read_at, made.fresh,
                       made.fresh_info)
    began = clock()
    resolved, live, plan, stats = plan_full()
    live = replace(live, source=trust.describe(), fetched_at=began)  # its facts are as of the start, no later
    plan = replace(plan, live_source=live.source)
    observed = observe(listing_of(live, began), resolved, live, state, began=began)
    record(path, identity, observed)
    users = {uid for group in live.groups.values() for uid, user in group.users.items()
             if user.face_tokens is not None or user.user_info is not None}  # read, not only listed
    return Tracked(resolved, live, plan, stats, replace(trust, users_read=len(users)), path,
                   dict.fromkeys(users, began))


def record_saved_apply(results: Iterable[OpResult], library: FaceLibrary, desired: Desired | None,
                       checked_at: float, state_file: str | os.PathLike | None = None) -> None:
    """Record into the state what an apply of a reviewed plan wrote: its facts were checked against the
    library at ``checked_at`` (``desired``: the manifest beside it, when there is one)."""
    entries = entry_digests(desired) if desired is not None else None
    path = Path(state_file) if state_file else default_path(library.identity)
    record(path, library.identity, observe_apply(results, checked_at, entries))


def read_tracked(library: FaceLibrary, desired: Desired, *, mode: str | None = None,
                 state_file: str | os.PathLike | None = None, audit: int | None = None, concurrency: int = 8,
                 progress: bool | None = None, clock: Callable[[], float] = time.time) -> Live:
    """What a plan of ``desired`` reads (``facesync snapshot``), full or incremental as ``plan_tracked``
    decides, recorded into the state; no plan, so no user is read for being touched by one."""
    from facesync.refresh import refresh

    identity = library.identity
    path = Path(state_file) if state_file else default_path(identity)
    state = load_state(path, identity)
    trust = _full_trust(mode or desired.policy.refresh, state, desired, path)
    if trust is None:
        live, _, observed = read_incremental(library, desired, state, audit=audit, concurrency=concurrency,
                                                   progress=progress, clock=clock)
    else:
        began = clock()
        live = refresh(library, desired, concurrency=concurrency, progress=progress)
        live = replace(live, source=trust.describe())
        observed = observe(listing_of(live, began), desired, live, state, began=began)
    record(path, identity, observed)
    return live


def _full_trust(mode: str, state: State | None, desired: Desired, path: Path) -> Trust | None:
    """None when an incremental refresh can run, else the Trust of the full refresh, saying why."""
    if mode != INCREMENTAL:
        return Trust(FULL)
    managed = {group.group_id for group in desired.groups}
    if state is not None and any(gid in managed for gid, _uid in state.users):
        return None
    why = "no state of this library yet" if state is None else "the state knows none of these groups"
    return Trust(FULL, full_because=f"{why}, at {path}")


def observe_apply(results: Iterable[OpResult], read_at: Mapping[str, float] | float,
                  entries: Mapping[Subject, str] | None = None) -> dict[Subject, Known | None]:
    """What an apply wrote, for ``state.record``. A (group, user) whose every operation was done (not
    "already": something else was at work) and whose faces are all known afterwards (the facts its
    operations were planned on, which apply read or checked in this run, plus the tokens the library
    answered) is recorded as the plan left it, with the time of that read (``read_at``: by user_id, or
    one time for all); any other user written to is forgotten, so the next incremental run reads it.
    ``entries``: the manifest entries' digests, when the manifest is known."""
    by_subject: dict[Subject, list[OpResult]] = {}
    for result in results:
        op = result.operation
        if op.user_id is not None and not is_own_group(op.group_id):
            by_subject.setdefault((op.group_id, op.user_id), []).append(result)
    observed: dict[Subject, Known | None] = {}
    for (gid, uid), done in by_subject.items():
        done.sort(key=lambda result: result.index)
        effect = user_effect([result.operation for result in done])
        after = _faces_after(done, effect.before if effect.exists else ())
        when = read_at if isinstance(read_at, (int, float)) else read_at.get(uid)
        if after is None or when is None:
            observed[(gid, uid)] = None
            continue
        info = effect.info_new if effect.info_new is not None else effect.info_old
        observed[(gid, uid)] = Known(after, info, float(when), (entries or {}).get((gid, uid), ""))
    return observed


def _faces_after(done: list[OpResult], before: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The user's faces after its operations, or None when they are not certain."""
    if before is None:
        return None
    faces = list(before)
    for result in done:
        op = result.operation
        if result.outcome != DONE or op.kind in (OpKind.COPY_USER, OpKind.DELETE_USER):
            return None
        token = result.face_token or (op.face.face_token if op.face is not None else None)
        if op.kind is OpKind.UPDATE_USER:
            if token is None:
                return None
            faces = [token]
        elif op.kind is OpKind.ADD_FACE:
            if token is None:
                return None
            if token not in faces:
                faces.append(token)
        elif op.kind is OpKind.DELETE_FACE:
            faces = [face for face in faces if face != op.face_token]
    return tuple(faces)


def _subjects(results: Iterable[OpResult]) -> set[Subject]:
    return {(r.operation.group_id, r.operation.user_id) for r in results if r.operation.user_id is not None}
