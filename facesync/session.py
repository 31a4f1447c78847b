"""The application layer: a ``Session`` holds one open face library and plans and applies against it.

It is to facesync what octoDNS's ``Manager`` is to octoDNS, or ``requests.Session`` to HTTP: the one
place that owns a library's lifecycle, so every command is "parse options → one session call → render"
and a program can do what the command line does::

    with Session.for_manifest("faceset.yaml", target="local:library.db") as session:
        plan = session.plan()
        result = session.apply(plan, on_result=print)

What a session does, and in which order (the order is what makes it safe and cheap):

- Opening (``Session(...)``, ``for_manifest``, ``for_plan``): the target is chosen (``target``, then
  ``FACESYNC_TARGET``, then the manifest's ``target:`` or the saved plan's library, then the default),
  the library opened by the target's policy (how a missing ``local:`` library is treated, the default
  QPS of a remote one), and a remote library's access token fetched: from then on its identity is known
  and its token cache (``cache.py``) can be opened. ``close()`` (or leaving the ``with`` block) closes
  both. ``Session.offline(SNAPSHOT)`` opens nothing: it plans against a snapshot, without credentials.
- Planning (``plan``): the manifest is narrowed (``groups``/``users``) before anything is read, the
  library is read before images are resolved (only users that exist live need face_tokens), then the
  pure planner runs; the plan carries the content sha256 of every file it uploads and where its
  manifest is, so it can be saved and applied elsewhere.
- Applying (``apply``): the library's lock is taken first; a manifest is planned inside the lock; a plan
  (one just made, or a reviewed ``SavedPlan``) is applied only if the library is the one it was made for
  and every live fact it was planned on still holds, with its safety counted again from the library.
  Then ``on_plan`` sees it, an empty plan ends there, an unsafe one is refused (``Plan.refusal``), and
  ``confirm`` may decline it; then it runs (``on_result`` per operation), is verified, and the report is
  written (also when the run failed or was interrupted). Failed operations are in the returned
  ``ApplyResult``, not raised.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, TextIO

from facesync import manifest as manifests
from facesync import progress as progress_bars
from facesync.api.protocol import FaceLibrary
from facesync.apply import execute, report_dict, stale_facts
from facesync.apply.results import ApplyResult, OpResult
from facesync.cache import DetectAgreement, FileHashes, TokenCache
from facesync.checkout import manifest_place
from facesync.errors import ConfigError, FacesyncError, PlanStaleError
from facesync.files import write_atomically
from facesync.model import Desired, ImageKind, Live
from facesync.plan.effects import structure, user_effect
from facesync.plan.matching import unexplained, unmatched_faces_error
from facesync.plan.ops import Plan
from facesync.plan.planner import make_plan, narrow, user_info_to_read
from facesync.plan.uploads import pin
from facesync.refresh import read_user_info, refresh
from facesync.resolve import ResolveStats, resolve_images
from facesync.targets import (
    CREATE,
    TargetSpec,
    choose_target,
    chosen_outside_manifest,
    estimate_qps,
    open_target,
    target_of_identity,
)

if TYPE_CHECKING:
    from typing_extensions import Self

    from facesync.doctor import Report as DoctorReport
    from facesync.export import ExportStats
    from facesync.incremental import Tracked, Trust
    from facesync.snapshot import Snapshot

log = logging.getLogger(__name__)

MAX_STALE_SHOWN = 50


@dataclass(frozen=True)
class Manifest:
    """A checked manifest, narrowed to the chosen groups and users (``load_manifest``)."""

    desired: Desired
    warnings: tuple = ()

    @property
    def path(self) -> str:
        return self.desired.manifest_path

    @property
    def target(self) -> str | None:
        """The manifest's own ``target:``, if it names one."""
        return self.desired.target


@dataclass(frozen=True)
class SavedPlan:
    """A reviewed plan file with its images found in this checkout (``load_plan_file``).

    ``desired``: the manifest beside the images, when this checkout holds it (its policy adds protected
    groups and the delete threshold); ``notices``: where images and library were found, for the user."""

    plan: Plan
    desired: Desired | None = None
    notices: tuple[str, ...] = ()


@dataclass(frozen=True)
class PlanDetails:
    """What a plan was made from: the resolved manifest, the live state read, what resolving cost."""

    desired: Desired
    live: Live
    resolve_stats: ResolveStats = field(default_factory=ResolveStats)
    trust: Trust | None = None  # what the live state rests on: users read now, users taken from the state


def load_manifest(path: str, *, groups: Iterable[str] = (), users: Iterable[str] = ()) -> Manifest:
    """The manifest at ``path``, checked (``ManifestError`` on any error, with file:line) and narrowed to
    ``groups`` and ``users`` (a name that matches nothing is a ``ConfigError``); warnings are logged."""
    return _load(path, tuple(groups), tuple(users), shows_target=True)


def _load(path: str, groups: tuple[str, ...], users: tuple[str, ...], *, shows_target: bool) -> Manifest:
    """``shows_target`` False: the caller goes on to choose the target with the manifest's ``target:``,
    whose refusal (a server the manifest may not name) is then the error; it is not a warning too.

    Files are not hashed here: resolve hashes only the images the diff needs, through the cache."""
    hashes = FileHashes.default()
    try:  # files hashed by an earlier plan (and unchanged) are not read again, not even their first bytes
        loaded = manifests.load(path, hash_images=False, known_file=hashes.known)
    finally:
        hashes.close()
    shown = loaded.warnings if shows_target else tuple(d for d in loaded.warnings if d.path != "target")
    if shown:
        log.warning("%s", manifests.render_diagnostics(shown, "text").rstrip(),
                    extra={"labelled": True})  # each line says "warning:" itself
    check_filters(loaded.desired, groups, users)
    desired = narrow(loaded.desired, set(groups) if groups else None, set(users) if users else None)
    return Manifest(desired, loaded.warnings)


def load_plan_file(source: str, *, chdir: str | None = None) -> SavedPlan:
    """A saved plan (path or JSON text), checked by checksum, with its images found and checked in this
    checkout (``chdir``, else the git checkout around the working folder, else the working folder).

    Refuses (``PlanStaleError``, ``ConfigError``), before anything is opened or written, when an image
    is missing or differs from what was planned."""
    from facesync.checkout import apply_roots
    from facesync.plan import planfile
    from facesync.plan.uploads import bind, find_checkout

    plan = planfile.load_plan(source)

    @functools.lru_cache(maxsize=2)  # the folder the plan was made in is read once to check its digest
    def load(path: str) -> Desired:
        return manifests.load(path, hash_images=False).desired

    found = find_checkout(plan, apply_roots(chdir, plan.planned_in), lambda path: load(path).digest)
    notices = []
    if any(op.face is not None and op.face.kind is ImageKind.FILE for op in plan.operations):
        notices.append(f"Images: paths in the plan are relative to {found.base}, the manifest's folder in "
                       f"{found.root.describe()}.")
    hashes = FileHashes.default()
    try:
        plan = bind(plan, found.base, file_hasher(hashes))
    finally:
        hashes.close()
    library = planfile.local_target_in(plan.target, plan.planned_in, found.root.path)
    if library is not None:
        if not found.manifest:
            raise ConfigError(f"the plan's library {library[1]} is relative to the folder it was made in, and "
                              "no folder here holds the plan's manifest",
                              hint="apply in a checkout of that folder (or --chdir DIR), or pass --target")
        notices.append(f"Library: {library[0]}, the plan's {library[1]} in {found.root.describe()}.")
        plan = replace(plan, target=library[0])
    return SavedPlan(plan, load(found.manifest) if found.manifest else None, tuple(notices))


class Session:
    """One open face library (a target) and its token cache; plans and applies against it.

    Use it as a context manager (or call ``close()``). Not for sharing between threads: one session runs
    one plan or apply at a time, each of which uses ``concurrency`` threads itself.
    """

    def __init__(self, target: str | TargetSpec | FaceLibrary | None = None, *, qps: float | None = None,
                 concurrency: int = 8, if_missing: str = CREATE, progress: bool | None = None,
                 cache: TokenCache | None = None, refresh: str | None = None, state: str | None = None,
                 audit: int | None = None):
        """Open ``target``: ``local:PATH``, ``baidu`` or a Baidu-compatible ``http(s)://host:port``; None:
        ``FACESYNC_TARGET``, else the default local library. Remote targets read BAIDU_API_KEY and
        BAIDU_SECRET_KEY (and BAIDU_APP_ID, when set, must match). A ``FaceLibrary`` already open is
        used as it is, and left open by ``close()``, as is a ``cache`` given here.

        ``qps``: the most calls a second (None: 10 for a remote target, no limit for a local one).
        ``if_missing``: what a ``local:`` library that does not exist yet becomes: ``"create"``d,
        read as ``"empty"`` until a write creates it, or an ``"error"``. ``progress``: bars on stderr
        (None: when stderr is a terminal). ``cache``: the token cache (default: the library's own).

        ``refresh``: how plans read the library, ``"full"`` or ``"incremental"`` (None: the manifest's
        ``policy.refresh``); ``state``: the state file plans trust and update, and applies record into
        (None: the library's own in the cache folder); ``audit``: users an incremental plan reads again
        for the audit (None: 1 % of them). See ``facesync/incremental.py``.
        """
        self.qps = qps
        self.refresh, self.state, self.audit = refresh, state, audit
        self.concurrency = concurrency
        self.progress = progress
        self.manifest: Manifest | None = None
        self.saved_plan: SavedPlan | None = None
        self._cache = cache
        self._owned = ExitStack()  # what close() closes, last opened first
        if target is None or isinstance(target, (str, TargetSpec)):
            self.spec = target if isinstance(target, TargetSpec) else choose_target(target)
            self.library: FaceLibrary = open_target(self.spec, qps=qps, concurrency=concurrency,
                                                    if_missing=if_missing)
            self._owned.callback(self.library.close)
        else:
            self.library = target
            self.spec = _target_of(target.identity)

    @classmethod
    def for_manifest(cls, manifest: str | Manifest, target: str | None = None, *, groups: Iterable[str] = (),
                     users: Iterable[str] = (), **options) -> Session:
        """A session on the target for ``manifest`` (a path, or a loaded ``Manifest``): ``target``, else
        ``FACESYNC_TARGET``, else the manifest's ``target:`` (``local:PATH`` or ``baidu`` only: a manifest
        never sends credentials to a server nobody chose outside it), else the default.
        ``plan()`` and ``apply()`` without an argument then use that manifest."""
        if not isinstance(manifest, Manifest):
            manifest = _load(manifest, tuple(groups), tuple(users), shows_target=chosen_outside_manifest(target))
        session = cls(choose_target(target, manifest.target), **options)
        session.manifest = manifest
        return session

    @classmethod
    def for_plan(cls, saved: SavedPlan | Plan, target: str | None = None, **options) -> Session:
        """A session on the library a saved plan was made for: ``target``, else ``FACESYNC_TARGET``, else
        the plan's own library if that is a local library or Baidu (a plan file is text anyone may have
        edited, so it never sends credentials to a server nobody chose outside it).
        ``apply()`` without an argument then applies that plan."""
        if isinstance(saved, Plan):
            saved = SavedPlan(saved)
        spec = choose_target(target) if chosen_outside_manifest(target) else _plan_target(saved.plan)
        session = cls(spec, **options)
        session.saved_plan = saved
        return session

    @classmethod
    def offline(cls, snapshot_path: str) -> OfflineSession:
        """A session that plans against a snapshot (``facesync snapshot``) instead of a library: no network,
        no credentials. Its ``plan()`` works as a session's does; it cannot apply."""
        return OfflineSession(snapshot_path)

    def __repr__(self) -> str:
        return f"Session({self.identity!r})"

    @property
    def identity(self) -> str:
        """Which library this is ("local:PATH", "<base URL> app <app id>"), as plans and reports name it."""
        return self.library.identity

    # ---- lifecycle ----

    @property
    def cache(self) -> TokenCache:
        """The library's token cache (content sha256 → face_token), opened on first use."""
        if self._cache is None:
            self._cache = TokenCache.for_target(self.identity)
            self._owned.callback(self._cache.close)
        return self._cache

    def close(self) -> None:
        """Close what the session opened (token cache, library); it cannot be used afterwards."""
        self._owned.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- planning ----

    def plan(self, manifest: str | Manifest | Desired | None = None, *, groups: Iterable[str] = (),
             users: Iterable[str] = (), force: bool = False, reupload: bool = False) -> Plan:
        """The plan that makes the library match ``manifest`` (a path, a loaded ``Manifest``, or a
        ``Desired`` built in code; None: the session's), narrowed to ``groups``/``users`` when given.
        Changes nothing in the library.

        ``force``: record in the plan that deleting more than the policy's share is wanted. ``reupload``: on a
        service whose detect tokens differ from stored ones, replace the faces facesync cannot match by
        re-adding the manifest's images (else ``UnmatchedFacesError``; see plan/matching.py)."""
        return self.plan_with_details(manifest, groups=groups, users=users, force=force, reupload=reupload)[0]

    def plan_with_details(self, manifest: str | Manifest | Desired | None = None, *, groups: Iterable[str] = (),
                          users: Iterable[str] = (), force: bool = False,
                          reupload: bool = False) -> tuple[Plan, PlanDetails]:
        """``plan``, with what it was made from (the resolved manifest, the live state, what resolving cost)."""
        tracked = self._plan_tracked(self._manifest(manifest, groups, users).desired, force, reupload)
        return tracked.plan, PlanDetails(tracked.desired, tracked.live, tracked.stats, tracked.trust)

    def _plan_tracked(self, desired: Desired, force: bool, reupload: bool) -> Tracked:
        """The plan, by the session's refresh, with the state read and updated (``incremental.py``)."""
        from facesync.incremental import plan_tracked

        qps = estimate_qps(self.spec, self.qps)
        return plan_tracked(desired, self.library, self.cache, mode=self.refresh, state_file=self.state,
                            audit=self.audit, qps=qps, concurrency=self.concurrency, force=force,
                            reupload=reupload, progress=self.progress,
                            plan_full=lambda: self._plan_full(desired, force, reupload),
                            finish=lambda plan, resolved: finish_plan(plan, resolved, self.cache))

    def _plan_full(self, desired: Desired, force: bool,
                   reupload: bool) -> tuple[Desired, Live, Plan, ResolveStats]:
        live = refresh(self.library, desired, concurrency=self.concurrency, progress=self.progress)
        resolution = resolve_images(desired, live, self.library, self.cache, concurrency=self.concurrency,
                                    progress=self.progress)
        live = read_user_info(self.library, live, user_info_to_read(resolution.desired, live),
                              concurrency=self.concurrency)
        plan = make_plan(resolution.desired, live, qps=estimate_qps(self.spec, self.qps), force=force,
                         reupload=reupload)
        plan = finish_plan(plan, resolution.desired, self.cache)
        return resolution.desired, live, plan, resolution.stats

    def _manifest(self, manifest: str | Manifest | Desired | None, groups: Iterable[str],
                  users: Iterable[str]) -> Manifest:
        if isinstance(manifest, Manifest):
            return manifest
        if isinstance(manifest, Desired):
            return Manifest(manifest)
        if manifest is not None:
            return load_manifest(manifest, groups=groups, users=users)
        if self.manifest is None:
            raise ConfigError("this session has no manifest: pass one (a path or a loaded Manifest)")
        return self.manifest

    # ---- applying ----

    def apply(self, source: str | Manifest | Plan | SavedPlan | None = None, *, force: bool = False,
              reupload: bool = False, verify: str = "quick", lock_timeout: float = 0.0, break_lock: bool = False,
              on_plan: Callable[[Plan], None] | None = None, confirm: Callable[[Plan], bool] | None = None,
              on_result: Callable[[OpResult], None] | None = None,
              report: str | None = None) -> ApplyResult:
        """Make the library match a manifest (a path or ``Manifest``: planned here, inside the lock), or
        apply exactly a plan (a ``Plan`` or a reviewed ``SavedPlan``; None: the session's own).

        ``force``: apply a plan that deletes more than the policy's safe share. ``reupload``: replace faces
        facesync cannot match on a service whose detect tokens differ from stored ones (``Session.plan``;
        a saved plan must have been made so). A plan that replaces faces on detected tokens without it is
        checked first, by one upload to a scratch group when nothing is known of the service yet.
        ``verify``: what is read back afterwards: "quick" (what the answers leave in doubt), "full" (every
        touched user), "off".
        ``lock_timeout``: seconds to wait for another apply's lock; ``break_lock``: remove a dead apply's
        lock first. ``on_plan``: sees the plan that is about to run (its safety counted for this run);
        ``confirm``: return False to stop before anything changes (``FacesyncError``); ``on_result``: called
        once per operation as it ends; ``report``: a file to write the JSON report to.

        Raises ``PlanStaleError`` (the library moved under a saved plan), ``PlanRefusedError`` (unsafe and
        not forced, or deleting a protected group; ``UnmatchedFacesError``, its kind for faces facesync
        cannot match), ``LockHeldError``; an operation's failure is not raised: see the returned
        ``ApplyResult`` (``ok``, ``failures``, ``stopped``, ``problems``).
        """
        from facesync.lock import library_lock

        if source is None:
            source = self.saved_plan or self.manifest
            if source is None:
                raise ConfigError("this session has no manifest or plan: pass one")
        saved = SavedPlan(source) if isinstance(source, Plan) else source
        if isinstance(saved, SavedPlan) and reupload and not saved.plan.reupload:
            raise ConfigError("--reupload goes with a manifest: a saved plan is applied exactly as it was made",
                              hint="make the plan with facesync plan MANIFEST --reupload --out PLAN.json")
        if isinstance(saved, SavedPlan) and saved.plan.target and saved.plan.target != self.identity:
            raise PlanStaleError(
                f"this plan was made for {saved.plan.target}, not for {self.identity}",
                hint="apply it to the library it was made for (--target), or make a new plan for this one",
            )
        from facesync.incremental import record_saved_apply

        with library_lock(self.spec, self.library, timeout=lock_timeout, break_lock=break_lock):
            if isinstance(saved, SavedPlan):
                checked_at = time.time()  # the plan's facts hold from here: what its writes are recorded with
                plan, protected = self._recheck(saved, force)
                record = functools.partial(record_saved_apply, library=self.library, desired=saved.desired,
                                           checked_at=checked_at, state_file=self.state)
            else:
                manifest = self._manifest(saved, (), ())
                tracked = self._plan_tracked(manifest.desired, force, reupload)
                plan, record = tracked.plan, tracked.record_apply
                protected = manifest.desired.policy.protected_groups
            if on_plan is not None:
                on_plan(plan)
            if plan.empty:
                return ApplyResult(results=(), plan=plan)
            refusal = plan.refusal(protected)
            if refusal is not None:
                raise refusal
            if confirm is not None and not confirm(plan):
                raise FacesyncError("Apply cancelled: nothing was changed.")
            self._check_matching(plan)
            if not isinstance(saved, SavedPlan):
                tracked.check_before_write(self.library, concurrency=self.concurrency)
            result = self._run(plan, protected, verify=verify, on_result=on_result, report=report)
            record(result.results)
            return result

    def _check_matching(self, plan: Plan) -> None:
        """Before the first write: refuse a plan that replaces faces on detected tokens where the service
        stores other tokens; when that is not known yet, find out with one upload (apply/probe.py)."""
        if not plan.replaced_by_detect or plan.reupload:
            return
        agreement = self.cache.detect_agreement()
        if agreement is None:
            from facesync.apply.probe import probe_detect_agreement

            agreement = probe_detect_agreement(self.library, plan, self.cache)  # None: still unknown
        if agreement is DetectAgreement.DIFFERENT:
            raise unmatched_faces_error(plan.replaced_by_detect, self.cache.detect_agreement_seen(),
                                        self.cache.path)

    def _recheck(self, saved: SavedPlan, force: bool) -> tuple[Plan, tuple[str, ...]]:
        """The saved plan with its safety counted for this run, after its live facts are checked."""
        from facesync.plan import trust

        plan = saved.plan
        moved = stale_facts(plan, self.library, concurrency=self.concurrency)
        if moved:
            shown = "\n".join(f"  - {line}" for line in moved[:MAX_STALE_SHOWN])
            more = f"\n  ... and {len(moved) - MAX_STALE_SHOWN} more" if len(moved) > MAX_STALE_SHOWN else ""
            raise PlanStaleError(f"the library has changed since this plan was made:\n{shown}{more}",
                                 hint="make a new plan (facesync plan MANIFEST --out PLAN.json) and review it")
        live_users = trust.read_scope(plan, saved.desired, self.library, concurrency=self.concurrency)
        plan = replace(plan, safety=trust.recount_safety(plan, live_users, saved.desired, force=force))
        return plan, trust.protected_groups(plan, saved.desired)

    def _run(self, plan: Plan, protected: Iterable[str], *, verify: str,
             on_result: Callable[[OpResult], None] | None, report: str | None) -> ApplyResult:
        with progress_bars.progress("Applying", total=len(plan.operations), enabled=self.progress) as bar:
            result = execute(plan, self.library, concurrency=self.concurrency, progress=bar, on_result=on_result,
                             cache=self.cache, protected_groups=protected, verify=verify)
        result = replace(result, plan=plan)
        if report:
            document = report_dict(result, target=self.identity, plan=plan, verify=verify)
            write_atomically(report, json.dumps(document, indent=2, ensure_ascii=False) + "\n", what="report")
        return result

    # ---- reading ----

    def doctor(self, photos: Sequence[bytes]) -> DoctorReport:
        """Observe how the library answers where Baidu's documentation is silent (``facesync doctor``), in
        scratch groups that are removed whatever happens; ``photos``: JPEG or PNG bytes of one face.
        Whether detect answers the stored token is kept in the token cache, for plans (plan/matching.py)."""
        from facesync.doctor import HARSH, LENIENT, QPS_BURST, examine

        burst = None
        if not self.spec.is_local:
            from facesync.api.baidu import BaiduClient

            location = self.spec.location

            def burst() -> FaceLibrary:
                return BaiduClient.from_environment(location, qps=None, max_attempts=1, max_elapsed=0,
                                                   concurrency=QPS_BURST)  # no retry, not even after 18
        report = examine(self.library, photos, identity=self.identity, burst=burst)
        for finding in report.findings:
            if finding.key == "detect_token" and finding.matches in (LENIENT, HARSH):
                self.cache.record_detect_agreement(DetectAgreement.of(finding.matches == LENIENT),
                                                   "facesync doctor")
        return report

    def snapshot(self, manifest: str | Manifest | None = None, *, whole: bool = False) -> Snapshot:
        """The live state a plan of ``manifest`` (None: the session's) reads, with its images' face_tokens,
        or with ``whole`` the whole library; for ``Session.offline``."""
        from facesync.incremental import read_tracked
        from facesync.snapshot import take_snapshot

        desired = None if whole else self._manifest(manifest, (), ()).desired
        read = functools.partial(read_tracked, mode=self.refresh, state_file=self.state, audit=self.audit)
        return take_snapshot(self.library, desired, self.cache, concurrency=self.concurrency,
                             progress=self.progress, read=read)

    def export(self, out: TextIO, *, groups: Iterable[str] = (), users: Iterable[str] = (),
               fragment: bool = False) -> ExportStats:
        """Write a manifest of what the library holds to ``out`` (``groups``: only these), or with
        ``users`` (``GROUP/USER``) or ``fragment`` a fragment for a manifest's ``include:``."""
        from facesync.export import export_fragment, export_manifest
        from facesync.targets import manifest_target_problem

        groups, users = tuple(groups), tuple(users)
        if fragment or users:
            return export_fragment(self.library, out, groups=groups, users=users, concurrency=self.concurrency)
        # a manifest may name only a target plan accepts from it: another server is left to --target
        written = self.spec.text if manifest_target_problem(self.spec.text) is None else None
        return export_manifest(self.library, out, target=written, groups=groups, concurrency=self.concurrency)


class OfflineSession:
    """Plans against a snapshot file instead of a library (``Session.offline``): no network, no credentials.

    The local token cache of the snapshot's library is read (never written) for tokens the snapshot lacks.
    """

    def __init__(self, snapshot_path: str):
        from facesync.snapshot import load_snapshot

        self.snapshot_path = snapshot_path
        self.snapshot = load_snapshot(snapshot_path)
        self.identity = self.snapshot.target

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Nothing is held open between calls."""

    def plan(self, manifest: str | Manifest, *, groups: Iterable[str] = (), users: Iterable[str] = (),
             qps: float | None = None, force: bool = False, reupload: bool = False,
             now: float | None = None) -> Plan:
        """The plan of ``manifest`` against the snapshot, pinned and named as an online plan is, so it can
        be saved, shown and applied alike; ``qps``: the rate its time estimate assumes."""
        return self.plan_with_details(manifest, groups=groups, users=users, qps=qps, force=force,
                                      reupload=reupload, now=now)[0]

    def plan_with_details(self, manifest: str | Manifest, *, groups: Iterable[str] = (), users: Iterable[str] = (),
                          qps: float | None = None, force: bool = False, reupload: bool = False,
                          now: float | None = None):
        """``plan``, with the ``OfflinePlan`` it came from (what was unresolved offline)."""
        from facesync.snapshot import plan_snapshot

        if not isinstance(manifest, Manifest):
            manifest = load_manifest(manifest, groups=groups, users=users)
        cache = TokenCache.for_target(self.snapshot.target)
        try:
            offline = plan_snapshot(manifest.desired, self.snapshot, self.snapshot_path, cache=cache,
                                    qps=qps, force=force, reupload=reupload, now=now)
        finally:
            cache.close()
        return offline.plan, offline


# ---- helpers of planning -----------------------------------------------------------------------------


def _plan_target(plan: Plan) -> TargetSpec:
    """The library the plan names, if that is a local library or Baidu."""
    if not plan.target:
        raise ConfigError("the plan names no target", hint="pass --target")
    spec = _target_of(plan.target)
    if not (spec.is_local or spec.is_baidu):
        shown = spec.text if spec.text.isprintable() else repr(spec.text)
        raise ConfigError(f"the plan names the target {shown}: facesync sends credentials only to Baidu or "
                          "to a server chosen outside the plan file",
                          hint=f"if you trust that server, choose it yourself: --target {shown} "
                               f"(or FACESYNC_TARGET={shown})")
    return spec


def _target_of(identity: str) -> TargetSpec:
    """The target a library's identity names; an identity that names none is refused."""
    spec = target_of_identity(identity)
    if spec is None:
        shown = identity if identity.isprintable() else repr(identity)
        raise ConfigError(f"{shown} names no target facesync knows",
                          hint="use local:PATH, baidu, or a base URL such as http://127.0.0.1:8000 (--target)")
    return spec


def check_filters(desired: Desired, groups: tuple[str, ...], users: tuple[str, ...]) -> None:
    """Refuse a ``--group``/``--user`` that matches nothing in the manifest, naming what exists.

    A filter that matches nothing would otherwise plan nothing and say "No changes": a typo in a
    scheduled drift check would hide every drift. Each ``--user`` must be in one of the chosen groups.
    """
    listed = [group.group_id for group in desired.groups]
    problems = [f"--group {gid}: the manifest has no such group" for gid in dict.fromkeys(groups)
                if gid not in listed]
    chosen = [group for group in desired.groups if not groups or group.group_id in groups]
    for uid in dict.fromkeys(users):
        if any(user.user_id == uid for group in chosen for user in group.users):
            continue
        elsewhere = [group.group_id for group in desired.groups if any(u.user_id == uid for u in group.users)]
        if groups and elsewhere:
            problems.append(f"--user {uid}: not in {_listing('group', [g.group_id for g in chosen])}; "
                            f"it is in {_listing('group', elsewhere)}")
        else:
            problems.append(f"--user {uid}: no group of the manifest has this user")
    if not problems:
        return
    exist = [f"the manifest has {_listing('group', listed)}"]
    if users:
        known = sorted({user.user_id for group in chosen for user in group.users})
        where = "in the chosen groups" if groups else "in all"
        exist.append(f"{where}, {_listing('user', known)}")
    raise ConfigError("; ".join(problems), hint="; ".join(exist))


def _listing(noun: str, names: list[str], shown: int = 10) -> str:
    """``group staff`` / ``groups staff, visitors`` / ``users a, b and 5 more``."""
    if not names:
        return f"no {noun}s"
    head = ", ".join(names[:shown])
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{noun}{'' if len(names) == 1 else 's'} {head}{more}"


def finish_plan(plan: Plan, desired: Desired, cache: TokenCache | None) -> Plan:
    """What a reviewed plan carries beside its operations: the content sha256 of every file it uploads,
    where its manifest is (relative to the checkout) and at which commit, the names of the faces it
    removes. Reads only files that are uploaded and not already hashed.

    Refuses (``UnmatchedFacesError``) a plan that replaces faces on detected tokens alone where the
    service is known to store other tokens, unless it was made with ``reupload`` (plan/matching.py)."""
    plan = pin(plan, file_hasher(cache.files if cache is not None else None))
    if plan.replaced_by_detect and cache is not None:
        users = unexplained(plan, cache.stored_tokens)
        if users and not plan.reupload and cache.detect_agreement() is DetectAgreement.DIFFERENT:
            raise unmatched_faces_error(users, cache.detect_agreement_seen(), cache.path)
        plan = replace(plan, replaced_by_detect=users, reupload=plan.reupload and bool(users))
    manifest_rel, root = manifest_place(desired.manifest_path) if desired.manifest_path else ("", None)
    base = os.path.dirname(os.path.realpath(desired.manifest_path)) if desired.manifest_path else ""
    names = removed_face_names(plan, desired, cache, base)
    notes = plan.notes
    if root is not None and root.changed and root.commit:
        notes += ((f"the manifest's folder has changes not in commit {root.commit[:12]}: this plan is of the "
                   "files as they are, not as committed"),)
    return replace(plan, manifest=manifest_rel, planned_in=root.path if root else "",
                   commit=root.commit if root else "", face_names=names, notes=notes)


def file_hasher(files: FileHashes | None) -> Callable[[str], str]:
    """sha256 of a file's content, from the file-hash cache when the file is unchanged, else read."""
    def sha256_of(path: str) -> str:
        info = os.stat(path)
        known = files.sha256(path, info.st_size, info.st_mtime_ns) if files is not None else None
        if known is not None:
            return known
        with open(path, "rb") as handle:
            digest = hashlib.sha256(handle.read()).hexdigest()
        if files is not None:
            files.record(path, info.st_size, info.st_mtime_ns, digest)
        return digest

    return sha256_of


def removed_face_names(plan: Plan, desired: Desired, cache: TokenCache | None, base: str) -> dict[str, str]:
    """face_token -> how people know it, for the faces ``plan`` removes: an image of the manifest with
    that token (its file, or its ``face_token:`` entry's place), else a file the token cache knows to
    have that content (shown relative to the manifest's folder; files elsewhere are not named)."""
    removed = {token for users in structure(plan).values() for user_id, ops in users.items()
               if user_id is not None for token in user_effect(ops).removed}
    if not removed:
        return {}
    names: dict[str, str] = {}
    for group in desired.groups:
        for user in group.users:
            for image in user.images:
                token = image.face_token
                if token in removed and token not in names:
                    if image.kind is ImageKind.FACE_TOKEN:
                        names[token] = f"face_token entry at {image.origin}" if image.origin else ""
                    else:
                        names[token] = image.source
    if cache is not None and base:
        for token, path in cache.files_of_tokens(removed - names.keys()).items():
            if path.startswith(base.rstrip(os.sep) + os.sep):
                names[token] = os.path.relpath(path, base).replace(os.sep, "/")
    return {token: name for token, name in sorted(names.items()) if name}

