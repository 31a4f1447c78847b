"""The executor: runs a Plan against a library, fast and so that no fault or crash loses a wanted face.

How it behaves, and why (where the contract is silent, these are the choices, modelled on Terraform):

- Order. An operation starts as soon as everything it waits for has succeeded: the plan's ``after``
  plus a few rules the executor enforces itself, because a wrong order can lose faces. Every rule only
  ever points at an EARLIER operation of the plan, so the graph cannot have a cycle:
  the group's CreateGroup first; within one (group, user) the first add/update/copy goes alone (it
  creates the user, or an update replaces every face), the other adds follow in parallel; a user's
  deletes wait for all of that user's earlier work (make before break) and for every earlier add that
  re-uses a face_token they remove; a copy waits for its source user to converge; a DeleteGroup waits for
  everything in that group. There is no global barrier between phases, so the pool stays busy.
- Idempotence. "Already exists" on a create-type call (223101, 223105, 223102) and "does not exist" on
  a delete-type call (223100, 223103, 223106) count as done ("already") only after the library was
  checked to hold what the operation wanted; a 223105 whose user_info differs is fixed in place.
- Failures. A permanent failure fails its operation and skips, transitively, every operation that waits
  for it, plus the face deletes and updates of the same user (a failed add never leaves a user with
  fewer faces than before); independent work carries on. 17/19 (quota) and auth errors stop the run at
  once: nothing new starts, calls in flight finish. Ctrl-C does the same, then re-raises.
- Safety. A DeleteGroup of a protected group, or any operation on facesync's own lock group, refuses
  the whole plan before the first call (the plan file carries the protected list; the manifest's policy
  adds to it). --force cannot override that.
- Verification. Afterwards a refresh of exactly what was touched (face/getlist per touched user,
  user/get @ALL per user whose user_info was set, group/getlist when groups were created or deleted)
  checks that the library holds what the plan wanted. Users with a failed or skipped operation are not
  verified: their failure is already reported.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Protocol

from facesync.api.errors import (
    AlreadyExistsError,
    AuthError,
    FaceApiError,
    NotFoundError,
    QuotaExhaustedError,
)
from facesync.api.protocol import ALL_GROUPS, FaceLibrary, Image, iter_group_ids
from facesync.errors import PlanRefusedError
from facesync.logs import redact
from facesync.model import LOCK_GROUP_ID, ImageKind
from facesync.plan.ops import Expect, FaceSource, Operation, OpKind, Plan

log = logging.getLogger(__name__)

DONE, ALREADY, FAILED, SKIPPED = "done", "already", "failed", "skipped"
OUTCOMES = (DONE, ALREADY, FAILED, SKIPPED)

_CREATE_CODES = frozenset({223101, 223105, 223102})
_GONE_CODES = frozenset({223100, 223103, 223106})
_PHASE_ONE = (OpKind.ADD_FACE, OpKind.UPDATE_USER, OpKind.COPY_USER)


class TokenCache(Protocol):
    def record(self, sha256: str, face_token: str) -> None: ...


@dataclass(frozen=True, slots=True)
class OpResult:
    """What happened to one operation. ``attempts``: API requests it made, retries included."""

    index: int
    operation: Operation
    outcome: str
    error_code: int | None = None
    error_msg: str | None = None
    log_id: int | None = None
    duration_s: float = 0.0
    attempts: int = 0
    face_token: str | None = None  # the token the library answered for an add or update

    @property
    def succeeded(self) -> bool:
        return self.outcome in (DONE, ALREADY)


@dataclass(frozen=True)
class ApplyResult:
    results: tuple[OpResult, ...]  # one per operation, in plan order
    stopped: str | None = None  # why the run stopped early (quota, credentials, interrupted)
    problems: tuple[str, ...] = ()  # what verification found not as the plan wanted
    verified: bool = False
    duration_s: float = 0.0  # the operations only; verification has its own
    calls: int = 0  # API requests made by the operations, retries included
    verify_s: float = 0.0
    verify_calls: int = 0
    totals: dict = field(default_factory=dict)
    interrupted: bool = False  # Ctrl-C: the caller reports, then re-raises

    @property
    def ok(self) -> bool:
        return self.stopped is None and not self.problems and all(r.succeeded for r in self.results)

    def count(self, outcome: str) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def failures(self) -> tuple[OpResult, ...]:
        return tuple(r for r in self.results if r.outcome == FAILED)


class _StopRun(Exception):
    """Raised inside a worker when the whole run must stop (quota, credentials)."""

    def __init__(self, error: FaceApiError):
        super().__init__(str(error))
        self.error = error


class _NotAsWanted(Exception):
    """An "already" answer whose check showed the library does not hold what was wanted."""


# ---------------------------------------------------------------------------------------------------
# Ordering: pure functions of the plan


def _subject(op: Operation) -> tuple[str, str] | None:
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
        subject = _subject(op)
        if op.kind in _PHASE_ONE and subject is not None:
            if subject in first_write:
                need.add(first_write[subject])
            need.update(updates.get(subject, ()))
        if op.kind is OpKind.COPY_USER and op.src_group_id and op.user_id is not None:
            need.update(by_user.get((op.src_group_id, op.user_id), ()))
        if op.kind in (OpKind.DELETE_FACE, OpKind.DELETE_USER) and subject is not None:
            need.update(by_user.get(subject, ()))
            for token in _tokens_removed(op):
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
            if op.kind in _PHASE_ONE:
                first_write.setdefault(subject, i)
            if op.kind is OpKind.UPDATE_USER:
                updates.setdefault(subject, []).append(i)
        if op.kind is OpKind.COPY_USER and op.src_group_id and op.user_id is not None:
            by_user.setdefault((op.src_group_id, op.user_id), []).append(i)
        if op.face is not None and op.face.kind is ImageKind.FACE_TOKEN and op.face.face_token:
            token_adds.setdefault(op.face.face_token, []).append(i)
    return tuple(deps)


def _tokens_removed(op: Operation) -> tuple[str, ...]:
    if op.kind is OpKind.DELETE_FACE:
        return (op.face_token,) if op.face_token else ()
    tokens: list[str] = []
    for expect in op.expects:
        if (expect.group_id, expect.user_id) == _subject(op) and expect.face_tokens:
            tokens.extend(expect.face_tokens)
    return tuple(tokens)


def check_safety(plan: Plan, protected_groups: Iterable[str] = ()) -> None:
    """Refuse a plan that deletes a protected group or touches the lock group, whatever its origin."""
    protected = set(protected_groups) | set(plan.protected_groups)
    reasons = []
    for op in plan.operations:
        if op.kind is OpKind.DELETE_GROUP and op.group_id in protected:
            reasons.append(f"the plan deletes the protected group {op.group_id}")
        if LOCK_GROUP_ID in (op.group_id, op.src_group_id):
            reasons.append(f"the plan touches facesync's lock group {LOCK_GROUP_ID} ({op.kind.value})")
    if reasons:
        raise PlanRefusedError(
            "refusing to apply: " + "; ".join(reasons),
            hint="protected groups are never deleted; remove the group from the protected list first",
        )


# ---------------------------------------------------------------------------------------------------
# Running


def execute(
    plan: Plan,
    library: FaceLibrary,
    *,
    concurrency: int = 8,
    progress=None,
    on_result: Callable[[OpResult], None] | None = None,
    cache: TokenCache | None = None,
    protected_groups: Iterable[str] = (),
    verify: bool = True,
) -> ApplyResult:
    """Run ``plan`` against ``library``; never raises for an operation's failure (see the result).

    ``progress``: anything with ``advance()`` (facesync.progress.Progress). ``on_result`` is called, in
    the calling thread, once per operation as it ends. ``cache``: the token cache to record
    sha256 → face_token in after each upload of a file.
    """
    check_safety(plan, protected_groups)
    started = time.monotonic()
    run = _Run(plan, library, concurrency=max(1, concurrency), progress=progress, on_result=on_result,
               cache=cache)
    restore = _install_observer(library, run.observe)
    try:
        run.run()
    finally:
        restore()
    ran_s = time.monotonic() - started
    problems: tuple[str, ...] = ()
    verify_calls = 0
    verified = False
    verify_started = time.monotonic()
    if verify and run.stopped is None and plan.operations:
        counter = _CountingLibrary(library)
        problems = verify_results(plan, counter, run.results_tuple(), concurrency=concurrency)
        verify_calls = counter.calls
        verified = True
    results = run.results_tuple()
    totals = {outcome: sum(1 for r in results if r.outcome == outcome) for outcome in OUTCOMES}
    return ApplyResult(
        results=results,
        stopped=run.stopped,
        problems=problems,
        verified=verified,
        duration_s=ran_s,
        verify_s=time.monotonic() - verify_started,
        calls=sum(r.attempts for r in results),
        verify_calls=verify_calls,
        totals=totals,
        interrupted=run.interrupted,
    )


class _Run:
    def __init__(self, plan: Plan, library: FaceLibrary, *, concurrency: int, progress, on_result, cache):
        self.plan = plan
        self.ops = plan.operations
        self.library = library
        self.concurrency = concurrency
        self.progress = progress
        self.on_result = on_result
        self.cache = cache
        self.cache_lock = threading.Lock()
        self.deps = dependencies(plan)
        self.dependents: list[list[int]] = [[] for _ in self.ops]
        for i, need in enumerate(self.deps):
            for j in need:
                self.dependents[j].append(i)
        self.waiting = [len(need) for need in self.deps]
        self.results: list[OpResult | None] = [None] * len(self.ops)
        self.stopped: str | None = None
        self.interrupted = False
        self._subjects: dict[tuple[str, str], list[int]] | None = None
        self.tls = threading.local()

    def results_tuple(self) -> tuple[OpResult, ...]:
        return tuple(r for r in self.results if r is not None)

    # --- scheduling (main thread only) ---

    def run(self) -> None:
        ready = [i for i, n in enumerate(self.waiting) if n == 0]
        heapq.heapify(ready)  # lowest index first: keeps the plan's order among ready operations
        in_flight: dict[Future, int] = {}
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="facesync-apply")
        try:
            while ready or in_flight:
                while ready and len(in_flight) < self.concurrency and self.stopped is None:
                    i = heapq.heappop(ready)
                    if self.results[i] is None:
                        in_flight[pool.submit(self._perform, i)] = i
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    i = in_flight.pop(future)
                    self._finish(future.result(), ready)
        except KeyboardInterrupt:
            self.stopped = "interrupted"
            self.interrupted = True
            for future in list(in_flight):  # let calls in flight end, so their outcome is known
                try:
                    self._finish(future.result(), [])
                except KeyboardInterrupt:
                    break
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            reason = self.stopped or "not run"
            for i, result in enumerate(self.results):
                if result is None:
                    self._record(OpResult(i, self.ops[i], SKIPPED, error_msg=f"not run: {reason}"))

    def _finish(self, result: OpResult, ready: list[int]) -> None:
        self._record(result)
        if result.succeeded:
            for j in self.dependents[result.index]:
                self.waiting[j] -= 1
                if self.waiting[j] == 0 and self.results[j] is None:
                    heapq.heappush(ready, j)
        elif result.outcome == FAILED:
            self._skip_after(result)

    def _skip_after(self, failed: OpResult) -> None:
        op = failed.operation
        why = f"skipped: {op.kind.value} {_where(op)} failed"
        start = list(self.dependents[failed.index])
        subject = _subject(op)
        if subject is not None:  # make before break: the user keeps every face it had
            start += [j for j in self._by_subject().get(subject, ())
                      if j > failed.index
                      and self.ops[j].kind in (OpKind.UPDATE_USER, OpKind.DELETE_FACE, OpKind.DELETE_USER)]
        stack = start
        while stack:
            j = stack.pop()
            if self.results[j] is not None:
                continue
            self._record(OpResult(j, self.ops[j], SKIPPED, error_msg=why))
            stack.extend(self.dependents[j])

    def _by_subject(self) -> dict[tuple[str, str], list[int]]:
        if self._subjects is None:
            self._subjects = {}
            for j, op in enumerate(self.ops):
                subject = _subject(op)
                if subject is not None:
                    self._subjects.setdefault(subject, []).append(j)
        return self._subjects

    def _record(self, result: OpResult) -> None:
        if self.results[result.index] is not None:
            return
        self.results[result.index] = result
        if self.progress is not None:
            self.progress.advance()
        if self.on_result is not None:
            self.on_result(result)

    # --- one operation (worker threads) ---

    def observe(self, record) -> None:
        calls = getattr(self.tls, "calls", None)
        if calls is not None:
            calls.append(record)

    def _perform(self, index: int) -> OpResult:
        op = self.ops[index]
        self.tls.calls = []
        self.tls.own_calls = 0
        started = time.monotonic()
        outcome, token, log_id = FAILED, None, None
        code = message = None
        try:
            if self.stopped is not None:
                return OpResult(index, op, SKIPPED, error_msg=f"not run: {self.stopped}")
            outcome, token, log_id = self._dispatch(op)
        except _StopRun as stop:
            error = stop.error
            self.stopped = redact(str(error))
            outcome, code, message, log_id = FAILED, error.error_code, redact(error.error_msg), error.log_id
        except FaceApiError as error:
            outcome, code, message, log_id = FAILED, error.error_code, redact(str(error)), error.log_id
        except _NotAsWanted as problem:
            outcome, message = FAILED, redact(str(problem))
        except OSError as error:
            outcome, message = FAILED, redact(f"cannot read {op.face.path if op.face else ''}: {error.strerror}")
        except Exception as error:  # a bug must not stop independent work nor hide the op's fate
            log.debug("operation %s raised", op.key, exc_info=True)
            outcome, message = FAILED, redact(f"{type(error).__name__}: {error}")
        finally:
            observed = self.tls.calls
            attempts = len(observed) or self.tls.own_calls
            self.tls.calls = None
        if log_id is None and observed:
            log_id = getattr(observed[-1], "log_id", None)
        return OpResult(index, op, outcome, code, message, log_id, time.monotonic() - started, attempts, token)

    def _call(self, method: str, *args, **kwargs):
        self.tls.own_calls += 1
        try:
            return getattr(self.library, method)(*args, **kwargs)
        except (QuotaExhaustedError, AuthError) as error:
            raise _StopRun(error) from error

    def _dispatch(self, op: Operation) -> tuple[str, str | None, int | None]:
        kind = op.kind
        if kind is OpKind.CREATE_GROUP:
            try:
                return DONE, None, self._call("group_add", op.group_id).log_id
            except AlreadyExistsError as error:
                _require_code(error, {223101})
                return ALREADY, None, error.log_id
        if kind is OpKind.ADD_FACE:
            return self._add_face(op)
        if kind is OpKind.UPDATE_USER:
            image, digest = self._image(op.face)
            added = self._call("user_update", op.group_id, op.user_id, image, user_info=op.user_info,
                               quality_control=op.quality_control, liveness_control=op.liveness_control)
            self._remember(op.face, digest, added.face_token)
            return DONE, added.face_token, added.log_id
        if kind is OpKind.COPY_USER:
            try:
                return DONE, None, self._call("user_copy", op.user_id, op.src_group_id, op.group_id).log_id
            except AlreadyExistsError as error:
                _require_code(error, {223102})
                return self._confirm_copy(op), None, error.log_id
        if kind is OpKind.DELETE_FACE:
            try:
                return DONE, None, self._call("face_delete", op.group_id, op.user_id, op.face_token).log_id
            except NotFoundError as error:
                _require_code(error, _GONE_CODES)
                if op.face_token in self._faces(op.group_id, op.user_id):
                    raise _NotAsWanted(f"the library says the face is gone but {_where(op)} still has it")
                return ALREADY, None, error.log_id
        if kind is OpKind.DELETE_USER:
            try:
                return DONE, None, self._call("user_delete", op.group_id, op.user_id).log_id
            except NotFoundError as error:
                _require_code(error, _GONE_CODES)
                if self._faces(op.group_id, op.user_id):
                    raise _NotAsWanted(f"the library says {_where(op)} is gone but it still has faces")
                return ALREADY, None, error.log_id
        if kind is OpKind.DELETE_GROUP:
            try:
                return DONE, None, self._call("group_delete", op.group_id).log_id
            except NotFoundError as error:
                _require_code(error, {223100})
                return ALREADY, None, error.log_id
        raise ValueError(f"unknown operation kind {kind!r}")

    def _add_face(self, op: Operation) -> tuple[str, str | None, int | None]:
        image, digest = self._image(op.face)
        try:
            added = self._call("user_add", op.group_id, op.user_id, image, user_info=op.user_info,
                               quality_control=op.quality_control, liveness_control=op.liveness_control)
        except AlreadyExistsError as error:
            _require_code(error, {223105})
            token = op.face.face_token if op.face else None
            if not token:
                detected = self._call("detect", image)
                if not detected.faces:
                    raise _NotAsWanted("the library says the face exists, but detect finds no face") from error
                token = detected.faces[0].face_token
            faces = self._faces(op.group_id, op.user_id)
            if token not in faces:
                raise _NotAsWanted(f"the library says the face exists, but {_where(op)} lacks {token}") from error
            self._remember(op.face, digest, token)
            if op.user_info is not None and self._user_info(op.group_id, op.user_id) != op.user_info:
                self._set_user_info(op.group_id, op.user_id, op.user_info, token, faces)
                return DONE, token, error.log_id
            return ALREADY, token, error.log_id
        self._remember(op.face, digest, added.face_token)
        return DONE, added.face_token, added.log_id

    def _confirm_copy(self, op: Operation) -> str:
        """223102: the user is already in the destination; make sure it has every face of the source."""
        wanted = self._faces(op.src_group_id, op.user_id)
        have = set(self._faces(op.group_id, op.user_id))
        missing = [t for t in wanted if t not in have]
        if not missing:
            return ALREADY
        info = self._user_info(op.src_group_id, op.user_id)
        for token in missing:
            self._call("user_add", op.group_id, op.user_id, Image.from_face_token(token), user_info=info)
        return DONE

    def _set_user_info(self, group_id: str, user_id: str, user_info: str, token: str, faces: list[str]) -> None:
        """Only user/update sets user_info without a new face, and it drops the other faces: re-add them."""
        self._call("user_update", group_id, user_id, Image.from_face_token(token), user_info=user_info)
        for other in faces:
            if other != token:
                self._call("user_add", group_id, user_id, Image.from_face_token(other), user_info=user_info)

    def _faces(self, group_id: str, user_id: str) -> list[str]:
        try:
            return [f.face_token for f in self._call("face_getlist", group_id, user_id).faces]
        except NotFoundError:
            return []

    def _user_info(self, group_id: str, user_id: str) -> str | None:
        try:
            record = self._call("user_get", group_id, user_id)
        except NotFoundError:
            return None
        return next((m.user_info for m in record.memberships if m.group_id == group_id), None)

    def _image(self, face: FaceSource | None) -> tuple[Image, str | None]:
        if face is None:
            raise ValueError("operation has no image")
        if face.kind is ImageKind.FILE:
            with open(face.path or face.source, "rb") as handle:
                data = handle.read()
            return Image.from_bytes(data), hashlib.sha256(data).hexdigest()
        if face.kind is ImageKind.URL:
            return Image.from_url(face.source), None
        return Image.from_face_token(face.face_token or face.source), None

    def _remember(self, face: FaceSource | None, digest: str | None, token: str) -> None:
        if self.cache is None or digest is None or face is None or face.kind is not ImageKind.FILE:
            return
        with self.cache_lock:
            try:
                self.cache.record(digest, token)
            except Exception:  # a cache that cannot be written costs a detect next time, not the apply
                log.warning("could not record a face_token in the token cache", exc_info=True)


def _require_code(error: FaceApiError, codes: Iterable[int]) -> None:
    """Only the documented codes mean "already there"; any other such error is a real failure."""
    if error.error_code not in set(codes):
        raise error


def _where(op: Operation) -> str:
    return f"{op.group_id}/{op.user_id}" if op.user_id is not None else op.group_id


def _install_observer(library: FaceLibrary, observer: Callable) -> Callable[[], None]:
    """Chain ``observer`` onto a client's ``on_call`` hook, so attempts and log_ids include retries.

    Returns what puts the previous hook back."""
    if not hasattr(library, "on_call"):
        return lambda: None
    previous = library.on_call

    def chained(record):
        if previous is not None:
            previous(record)
        observer(record)

    try:
        library.on_call = chained
    except AttributeError:
        return lambda: None
    return lambda: setattr(library, "on_call", previous)


class _CountingLibrary:
    """Counts the calls verification makes, for the report."""

    def __init__(self, library: FaceLibrary):
        self._library = library
        self._lock = threading.Lock()
        self.calls = 0

    def __getattr__(self, name):
        target = getattr(self._library, name)
        if not callable(target):
            return target

        def counted(*args, **kwargs):
            with self._lock:
                self.calls += 1
            return target(*args, **kwargs)

        return counted


# ---------------------------------------------------------------------------------------------------
# Verification and staleness: what the plan wanted, read back


@dataclass
class _Wanted:
    exists: bool | None = None
    exact: set[str] | None = None  # the whole face set, when the plan knows it
    must_have: set[str] = field(default_factory=set)
    must_not: set[str] = field(default_factory=set)
    user_info: str | None = None


def wanted_state(plan: Plan, results: Iterable[OpResult]) -> tuple[dict[str, bool], dict[tuple[str, str], _Wanted]]:
    """What the plan leaves behind, replayed from the operations that succeeded (pure).

    Users with a failed or skipped operation, and users of deleted groups, are left out.
    """
    by_index = {r.index: r for r in results}
    incomplete = set()
    for r in by_index.values():
        if not r.succeeded:
            incomplete |= _subjects_of(r.operation)
    groups: dict[str, bool] = {}
    users: dict[tuple[str, str], _Wanted] = {}

    def state(subject: tuple[str, str]) -> _Wanted:
        if subject not in users:
            wanted = _Wanted()
            for op in plan.operations:
                for expect in op.expects:
                    if (expect.group_id, expect.user_id) == subject:
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
        subject = _subject(op)
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


def _subjects_of(op: Operation) -> set[tuple[str, str]]:
    subjects = set()
    if op.user_id is not None:
        subjects.add((op.group_id, op.user_id))
    return subjects


def verify_results(plan: Plan, library: FaceLibrary, results: Iterable[OpResult], *,
                   concurrency: int = 8) -> tuple[str, ...]:
    """Read back what was touched; each string says one thing that is not as the plan wanted."""
    groups, users = wanted_state(plan, results)
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
        faces = dict(zip(subjects, pool.map(lambda s: _read_faces(library, *s), subjects)))
        infos = dict(zip(info_users, pool.map(lambda u: _read_infos(library, u), info_users)))
    for subject in subjects:
        problems.extend(_compare(subject, users[subject], faces[subject], infos.get(subject[1], {})))
    return tuple(problems)


def _read_faces(library: FaceLibrary, group_id: str, user_id: str) -> set[str] | None:
    """The user's face tokens, or None when the user (or its group) does not exist."""
    try:
        return {f.face_token for f in library.face_getlist(group_id, user_id).faces}
    except NotFoundError:
        return None


def _read_infos(library: FaceLibrary, user_id: str) -> dict[str, str]:
    try:
        record = library.user_get(ALL_GROUPS, user_id)
    except NotFoundError:
        return {}
    return {m.group_id: m.user_info for m in record.memberships}


def _compare(subject: tuple[str, str], wanted: _Wanted, faces: set[str] | None, infos: dict[str, str]) -> list[str]:
    where = f"{subject[0]}/{subject[1]}"
    if wanted.exists is False:
        return [f"user {where}: still exists with {len(faces)} face(s), the plan deleted it"] if faces else []
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
    """The ``expects`` of a saved plan that no longer hold; empty when the plan still fits the library."""
    expects: dict[tuple, Expect] = {}
    for op in plan.operations:
        for expect in op.expects:
            expects.setdefault((expect.group_id, expect.user_id, expect.exists, expect.face_tokens,
                                expect.user_info), expect)
    if not expects:
        return ()
    moved: list[str] = []
    group_facts = [e for e in expects.values() if e.user_id is None]
    user_facts = [e for e in expects.values() if e.user_id is not None]
    if group_facts:
        present = set(iter_group_ids(library))
        for e in group_facts:
            if e.exists and e.group_id not in present:
                moved.append(f"group {e.group_id}: the plan expected it to exist; it does not")
            if not e.exists and e.group_id in present:
                moved.append(f"group {e.group_id}: the plan expected it not to exist; it does")
    subjects = sorted({(e.group_id, e.user_id) for e in user_facts})
    info_users = sorted({e.user_id for e in user_facts if e.user_info is not None and e.exists})
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        faces = dict(zip(subjects, pool.map(lambda s: _read_faces(library, *s), subjects)))
        infos = dict(zip(info_users, pool.map(lambda u: _read_infos(library, u), info_users)))
    for e in sorted(user_facts, key=lambda e: (e.group_id, e.user_id)):
        have = faces[(e.group_id, e.user_id)]
        where = f"{e.group_id}/{e.user_id}"
        if not e.exists:
            if have is not None:
                moved.append(f"user {where}: the plan expected it not to exist; it has {len(have)} face(s)")
            continue
        if have is None:
            moved.append(f"user {where}: the plan expected it to exist; it does not")
            continue
        if e.face_tokens is not None and have != set(e.face_tokens):
            gone = sorted(set(e.face_tokens) - have)
            new = sorted(have - set(e.face_tokens))
            detail = ", ".join(filter(None, [f"gone: {' '.join(gone)}" if gone else "",
                                             f"new: {' '.join(new)}" if new else ""]))
            moved.append(f"user {where}: faces changed ({detail})")
        if e.user_info is not None:
            info = infos.get(e.user_id, {}).get(e.group_id)
            if info != e.user_info:
                moved.append(f"user {where}: user_info is now {info!r}, the plan expected {e.user_info!r}")
    return tuple(dict.fromkeys(moved))


# ---------------------------------------------------------------------------------------------------
# The report


def report_dict(result: ApplyResult, *, target: str = "", plan: Plan | None = None) -> dict:
    """The JSON report: every operation with its outcome, error and log_id, and the totals. No secrets."""
    operations = []
    for r in result.results:
        op = r.operation
        operations.append({
            "index": r.index,
            "key": redact(op.key),
            "kind": op.kind.value,
            "endpoint": op.kind.endpoint,
            "group_id": op.group_id,
            "user_id": op.user_id,
            "outcome": r.outcome,
            "error_code": r.error_code,
            "error_msg": redact(r.error_msg) if r.error_msg else None,
            "log_id": r.log_id,
            "duration_s": round(r.duration_s, 6),
            "attempts": r.attempts,
            "face_token": r.face_token,
        })
    return {
        "format_version": 1,
        "target": redact(target),
        "created_at": getattr(plan, "created_at", "") if plan is not None else "",
        "ok": result.ok,
        "stopped": result.stopped,
        "totals": {**{o: result.count(o) for o in OUTCOMES}, "operations": len(result.results),
                   "calls": result.calls, "verify_calls": result.verify_calls,
                   "duration_s": round(result.duration_s, 3), "verify_s": round(result.verify_s, 3)},
        "verification": {"done": result.verified, "ok": result.verified and not result.problems,
                         "problems": list(result.problems)},
        "operations": operations,
    }
