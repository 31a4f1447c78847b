"""The executor: runs a Plan against a library, fast and so that no fault or crash loses a wanted face.

- Order: see ``order.py``. An operation starts as soon as everything it waits for has succeeded.
- Idempotence. "Already exists" on a create-type call (223101, 223105, 223102) and "does not exist" on
  a delete-type call (223100, 223103, 223106) count as done ("already") only after the library was
  checked to hold what the operation wanted. A 223105 whose user_info differs fails the operation
  rather than fixing it in place: setting user_info alone takes a user/update, which drops the other
  faces, and only the planner knows how to re-add them safely (files, or a staging copy).
- Lost answers. The client repeats a call whose answer was lost only where a late original is harmless
  (api/retry.py). A user/update is not repeated: the library is read instead, and the operation is
  done if it shows the update's effect, else failed (so its re-adds never race a late original).
- Faces moving between users of a group. Baidu may refuse one face on two users of a group (223105).
  The planner orders the moves it can see (by face_token); an add or update of a file or URL that meets
  223105 while the plan removes faces from other users of that group (a move the plan could not see: a
  user new to every group takes the photos of a user whose faces were not read) waits for those removals
  (the ones that do not wait for it) and is tried once more. An add by face_token never waits so: the
  removal could leave the face on no user, and the token dead.
- Uploads. Each user/add or user/update of a file or URL is noted in the token cache before it is sent
  and recorded with its answer, one at a time per user, so that an apply killed in between leaves a face
  the next plan can still name (``resolve.adopt_pending``) where detect answers other tokens.
- Failures. A permanent failure fails its operation and skips, transitively, every operation that waits
  for it, plus the face deletes and updates of the same user (a failed add never leaves a user with
  fewer faces than before); independent work carries on. 17/19 (quota) and auth errors stop the run at
  once: nothing new starts, calls in flight finish. Ctrl-C does the same, then re-raises.
- Safety. A DeleteGroup of a protected group, or any operation on facesync's own lock group, refuses
  the whole plan before the first call (the plan file carries the protected list; the manifest's policy
  adds to it). --force cannot override that.
- Verification: see ``verify.py``.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from typing import Protocol

from facesync.api.errors import (
    AnswerLostError,
    AuthError,
    FaceApiError,
    FaceExistsError,
    FaceNotFoundError,
    GroupExistsError,
    GroupNotFoundError,
    NotFoundError,
    QuotaExhaustedError,
    RetryableError,
    UserExistsError,
    UserNotFoundError,
)
from facesync.api.protocol import CallRecord, FaceLibrary, Image, iter_group_ids
from facesync.apply.order import dependencies, subject_of
from facesync.apply.results import ALREADY, DONE, FAILED, OUTCOMES, SKIPPED, ApplyResult, OpResult
from facesync.apply.verify import VERIFY_MODES, verify_results
from facesync.cache import image_key
from facesync.logs import redact
from facesync.model import ImageKind
from facesync.plan.ops import FaceSource, Operation, OpKind, Plan
from facesync.plan.uploads import PlanImagesError, load_upload

log = logging.getLogger(__name__)

_GONE = (GroupNotFoundError, UserNotFoundError, FaceNotFoundError)  # a delete finding its subject gone
GROUP_WAIT_S = 600.0  # how long a group/add waits for a background delete of the same id to end


class UploadTokens(Protocol):
    """What the executor needs of a token cache (``facesync.cache.TokenCache`` is one): the face_token
    user/add answered for an uploaded image, remembered by the file's sha256 (or the URL) and looked up,
    and each upload noted before it is sent (``record_pending``) until its answer is recorded."""

    def record_upload(self, image: str, face_token: str, path: str | None = None) -> None: ...

    def record_pending(self, image: str, group_id: str, user_id: str) -> None: ...

    def clear_pending(self, image: str, group_id: str, user_id: str) -> None: ...

    def token(self, sha256: str) -> str | None: ...


class _StopRun(Exception):
    """Raised inside a worker when the whole run must stop (quota, credentials)."""

    def __init__(self, error: FaceApiError):
        super().__init__(str(error))
        self.error = error


class _NotAsWanted(Exception):
    """An "already" answer whose check showed the library does not hold what was wanted."""


class _WaitForRemovals(Exception):
    """An add or update met 223105 while other users of its group have faces to lose: try it after those."""

    def __init__(self, removals: tuple[int, ...]):
        super().__init__(f"waiting for {len(removals)} removal(s)")
        self.removals = removals


_DEFERRED = "deferred"  # the outcome of a try that waits for removals: never recorded, the op runs again
_REMOVALS = (OpKind.DELETE_FACE, OpKind.DELETE_USER, OpKind.UPDATE_USER)


def execute(
    plan: Plan,
    library: FaceLibrary,
    *,
    concurrency: int = 8,
    progress=None,
    on_result: Callable[[OpResult], None] | None = None,
    cache: UploadTokens | None = None,
    protected_groups: Iterable[str] = (),
    verify: str = "quick",
    group_wait_s: float = GROUP_WAIT_S,
    sleep: Callable[[float], None] = time.sleep,
) -> ApplyResult:
    """Run ``plan`` against ``library``; never raises for an operation's failure (see the result).

    ``progress``: anything with ``advance()`` (facesync.progress.Progress). ``on_result`` is called, in
    the calling thread, once per operation as it ends. ``cache``: the token cache to record
    sha256 → face_token in after each upload of a file. ``verify``: one of ``VERIFY_MODES``
    (see verify.py): what is read back afterwards. ``group_wait_s``: how long a CreateGroup waits for a
    background delete of the same group id to end (``sleep`` waits between tries).
    """
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    refusal = plan.refusal(protected_groups, threshold=False)  # the threshold is the caller's: --force
    if refusal is not None:
        raise refusal
    started = time.monotonic()
    run = _Run(plan, library, concurrency=max(1, concurrency), progress=progress, on_result=on_result,
               cache=cache)
    run.group_wait_s, run.sleep = group_wait_s, sleep
    library.observers.append(run.observe)  # attempts and log_ids include the client's retries
    try:
        run.run()
    finally:
        library.observers.remove(run.observe)
    ran_s = time.monotonic() - started
    problems: tuple[str, ...] = ()
    verify_calls = 0
    verified = False
    verify_started = time.monotonic()
    if verify != "off" and run.stopped is None and plan.operations:
        reads: list[CallRecord] = []
        library.observers.append(reads.append)
        try:
            problems = verify_results(plan, library, run.results_tuple(), concurrency=concurrency, mode=verify)
        finally:
            library.observers.remove(reads.append)
        verify_calls = sum(1 for record in reads if record.attempt == 1)  # calls, not their retries
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
        self.upload_locks: dict[tuple[str, str], threading.Lock] = {}  # per user: see _upload
        self.upload_locks_guard = threading.Lock()
        self.group_wait_s = GROUP_WAIT_S
        self.sleep: Callable[[float], None] = time.sleep
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
        self.graph_lock = threading.Lock()  # ``dependents`` grows when an add waits for removals
        self.deferred: dict[int, int] = {}  # operation -> attempts of the try that made it wait
        self.wait_for: dict[int, tuple[int, ...]] = {}

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
        if result.outcome == _DEFERRED:
            self._defer(result, ready)
            return
        self._record(result)
        if result.succeeded:
            for j in self.dependents[result.index]:
                self.waiting[j] -= 1
                if self.waiting[j] == 0 and self.results[j] is None:
                    heapq.heappush(ready, j)
        elif result.outcome == FAILED:
            self._skip_after(result)

    def _defer(self, result: OpResult, ready: list[int]) -> None:
        """Run the operation again once the removals it waits for have succeeded (skipped if one fails)."""
        i = result.index
        self.deferred[i] = result.attempts
        with self.graph_lock:
            for j in self.wait_for.pop(i, ()):
                if self.results[j] is None:
                    self.dependents[j].append(i)
                    self.waiting[i] += 1
        if self.waiting[i] == 0:
            heapq.heappush(ready, i)

    def _wait_for_removals(self, op: Operation, error: FaceApiError) -> None:
        """223105 on an add or update of a file or URL: the face may be on another user of the group that
        the plan takes it from later. Raise ``_WaitForRemovals`` when there is such a removal to wait for
        (once per operation); a face_token never waits (its face could end on no user)."""
        index = self.tls.index
        if op.face is None or op.face.kind is ImageKind.FACE_TOKEN or index in self.deferred:
            return
        removals = self._removals_to_wait_for(index)
        if removals:
            raise _WaitForRemovals(removals) from error

    def _removals_to_wait_for(self, index: int) -> tuple[int, ...]:
        """Removals from other users of the operation's group that do not wait for it and have not run yet,
        or have succeeded: one may have ended between the refusal and now (then the operation is tried again
        at once). Empty when none of them could make room for the face."""
        op = self.ops[index]
        with self.graph_lock:
            removals = [j for j, other in enumerate(self.ops)
                        if other.kind in _REMOVALS and other.group_id == op.group_id and other.user_id != op.user_id
                        and (self.results[j] is None or self.results[j].succeeded)]
            if not removals:
                return ()
            after_it, stack = set(), [index]
            while stack:
                for j in self.dependents[stack.pop()]:
                    if j not in after_it:
                        after_it.add(j)
                        stack.append(j)
        return tuple(j for j in removals if j not in after_it)

    def _skip_after(self, failed: OpResult) -> None:
        op = failed.operation
        why = f"skipped: {op.kind.value} {_where(op)} failed"
        start = list(self.dependents[failed.index])
        subject = subject_of(op)
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
                subject = subject_of(op)
                if subject is not None:
                    self._subjects.setdefault(subject, []).append(j)
        return self._subjects

    def _record(self, result: OpResult) -> None:
        if self.results[result.index] is not None:
            return
        if result.index in self.deferred:  # count the try that waited too
            result = replace(result, attempts=result.attempts + self.deferred.pop(result.index))
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
        self.tls.index = index
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
        except _WaitForRemovals as wait_for:
            self.wait_for[index] = wait_for.removals
            outcome, message = _DEFERRED, str(wait_for)
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
            log_id = observed[-1].log_id
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
            return self._create_group(op)
        if kind in (OpKind.ADD_FACE, OpKind.UPDATE_USER):
            return self._upload(op)
        if kind is OpKind.COPY_USER:
            try:
                return DONE, None, self._call("user_copy", op.user_id, op.src_group_id, op.group_id).log_id
            except UserExistsError as error:
                return self._confirm_copy(op), None, error.log_id
        if kind is OpKind.DELETE_FACE:
            try:
                return DONE, None, self._call("face_delete", op.group_id, op.user_id, op.face_token).log_id
            except _GONE as error:
                if op.face_token in self._faces(op.group_id, op.user_id):
                    raise _NotAsWanted(f"the library says the face is gone but {_where(op)} still has it")
                return ALREADY, None, error.log_id
        if kind is OpKind.DELETE_USER:
            try:
                return DONE, None, self._call("user_delete", op.group_id, op.user_id).log_id
            except _GONE as error:
                if self._faces(op.group_id, op.user_id):
                    raise _NotAsWanted(f"the library says {_where(op)} is gone but it still has faces")
                return ALREADY, None, error.log_id
        if kind is OpKind.DELETE_GROUP:
            try:
                return DONE, None, self._call("group_delete", op.group_id).log_id
            except GroupNotFoundError as error:
                return ALREADY, None, error.log_id
        raise ValueError(f"unknown operation kind {kind!r}")

    def _upload(self, op: Operation) -> tuple[str, str | None, int | None]:
        """A user/add or user/update, noted in the token cache before it is sent and recorded after.

        One upload at a time per user: a crash then leaves at most one face of a user whose answer was
        not recorded, which the next plan can name (resolve.adopt_pending). A definite refusal drops the
        note; a lost answer keeps it, since the face may have landed."""
        with self.upload_locks_guard:
            lock = self.upload_locks.setdefault((op.group_id, op.user_id or ""), threading.Lock())
        with lock:
            image, digest = self._image(op.face)
            self._intend(op, digest)
            try:
                if op.kind is OpKind.ADD_FACE:
                    return self._add_face(op, image, digest)
                return self._update_user(op, image, digest)
            except FaceApiError as error:
                if not isinstance(error, AnswerLostError) and error.error_code:
                    self._forget(op, digest)
                raise

    def _send(self, endpoint: str, op: Operation, image: Image):
        """user/add or user/update of ``op``'s user with ``image``, its user_info and controls."""
        return self._call(endpoint, op.group_id, op.user_id, image, user_info=op.user_info,
                          quality_control=op.quality_control, liveness_control=op.liveness_control)

    def _update_user(self, op: Operation, image: Image,
                     digest: str | None) -> tuple[str, str | None, int | None]:
        try:
            added = self._send("user_update", op, image)
        except AnswerLostError as error:
            return self._update_answer_lost(op, digest, error)
        except FaceExistsError as error:  # the one face may still be on another user of the group
            self._wait_for_removals(op, error)
            raise
        self._remember(op, digest, added.face_token)
        return DONE, added.face_token, added.log_id

    def _add_face(self, op: Operation, image: Image,
                  digest: str | None) -> tuple[str, str | None, int | None]:
        try:
            added = self._send("user_add", op, image)
        except FaceExistsError as error:
            # what an earlier user/add answered for these bytes first: detect's token may differ from it
            token = self._cached_token(digest) or (op.face.face_token if op.face else None)
            if not token:
                detected = self._call("detect", image)
                if not detected.faces:
                    raise _NotAsWanted("the library says the face exists, but detect finds no face") from error
                token = detected.faces[0].face_token
            faces = self._faces(op.group_id, op.user_id)
            if token not in faces:
                self._wait_for_removals(op, error)
                token = self._landed_under_other_token(op, faces, token, error)
            self._remember(op, digest, token)
            if op.user_info is not None:
                have = self._user_info(op.group_id, op.user_id)
                if have != op.user_info:  # changed under us: re-planning sets it without losing a face
                    raise _NotAsWanted(f"{_where(op)} has the face but user_info {have!r}, not {op.user_info!r}; "
                                       "run apply again to plan the change") from error
            return ALREADY, token, error.log_id
        self._remember(op, digest, added.face_token)
        return DONE, added.face_token, added.log_id

    def _update_answer_lost(self, op: Operation, digest: str | None,
                            error: AnswerLostError) -> tuple[str, str | None, int | None]:
        """user/update sent, no answer in time. The client does not repeat it: it may still be carried out
        later, and would then remove the faces added after it. Done if the library already shows its
        effect (one face, the new user_info); otherwise the operation fails, and what waits on it with it."""
        faces = self._faces(op.group_id, op.user_id)
        token = self._cached_token(digest) or (op.face.face_token if op.face else None)
        landed = len(faces) == 1 and token in (None, faces[0])
        if landed and op.user_info is not None:
            landed = self._user_info(op.group_id, op.user_id) == op.user_info
        if landed:
            self._remember(op, digest, faces[0])
            return DONE, faces[0], error.log_id
        raise FaceApiError(0, (
            f"user/update of {_where(op)} got no answer in time ({error.error_msg}); it was not sent again, "
            "since it may still be carried out and would then remove the faces added after it, and the "
            "library does not show it yet. Run apply again in a few minutes: it plans from what is there"),
            error.log_id)

    def _landed_under_other_token(self, op: Operation, faces: list[str], token: str, error: FaceApiError) -> str:
        """223105, and the user lacks the face under the token facesync knows for the image.

        Either an earlier attempt of this very add landed (its answer lost) and the service stored the image
        under another token than detect answers, or the image was already there under such a token, or the
        face is on another user of the group. The first leaves exactly one face on the user that neither the
        plan's live facts nor the user's other operations account for: that one is this image's stored token.
        Anything else stops the run before a delete could follow a guess."""
        before: set[str] | None = None
        for expect in op.expects:
            if (expect.group_id, expect.user_id) == (op.group_id, op.user_id):
                before = set() if not expect.exists else (set(expect.face_tokens) if expect.face_tokens else None)
        if before is not None:
            others = set()
            for j in self._by_subject().get((op.group_id, op.user_id), ()):
                other, result = self.ops[j], self.results[j]
                if other is not op and other.face is not None and other.face.face_token:
                    others.add(other.face.face_token)
                if other is not op and result is not None and result.face_token:
                    others.add(result.face_token)
            candidates = set(faces) - before - others
            if len(candidates) == 1:
                stored = candidates.pop()
                log.info("%s: the image %s is stored as %s (detect said %s)", _where(op),
                         op.face.source if op.face else "", stored, token)
                return stored
        raise _StopRun(_unmatched_face(op, token, error)) from error

    def _create_group(self, op: Operation) -> tuple[str, str | None, int | None]:
        """group/add, waiting (within ``group_wait_s``) while a group of that id is deleted in the background.

        Baidu deletes a large group in the background; until it is done, re-creating the id fails: with a
        retryable "busy" code, or with 223101 "already exists" although no listing shows the group. A 223101
        therefore counts as done only once group/getlist shows the group."""
        deadline = time.monotonic() + self.group_wait_s
        delay = 1.0
        while True:
            try:
                return DONE, None, self._call("group_add", op.group_id).log_id
            except GroupExistsError as error:
                if op.group_id in set(iter_group_ids(self.library)):
                    return ALREADY, None, error.log_id
                last = error
            except RetryableError as error:  # the client has retried already; keep waiting within the bound
                last = error
            if time.monotonic() + delay > deadline or self.stopped is not None:
                raise FaceApiError(last.error_code, (
                    f"group {op.group_id} cannot be created: a group of that id is still being deleted in the "
                    f"background (Baidu deletes large groups at about 20 faces/s); waited "
                    f"{self.group_wait_s:.0f} s. Run apply again later. Last answer: {last.error_msg}"),
                    last.log_id) from last
            log.info("group %s is still being deleted in the background; trying again in %.0f s", op.group_id, delay)
            self.sleep(delay)
            delay = min(delay * 2, 30.0)

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
        try:
            return load_upload(face)
        except PlanImagesError as error:
            raise _NotAsWanted(error.message) from None

    def _cached_token(self, digest: str | None) -> str | None:
        """The token an earlier user/add answered for these bytes (detect's may differ from it)."""
        if digest is None or self.cache is None:
            return None
        with self.cache_lock:
            return self.cache.token(digest)

    def _intend(self, op: Operation, digest: str | None) -> None:
        """Before an upload: note it, so that a crash before ``_remember`` leaves a face the next plan can
        still name (resolve.py adopts it) on a service whose detect answers other tokens."""
        self._write_cache(op, digest, lambda key: self.cache.record_pending(key, op.group_id, op.user_id))

    def _forget(self, op: Operation, digest: str | None) -> None:
        self._write_cache(op, digest, lambda key: self.cache.clear_pending(key, op.group_id, op.user_id))

    def _remember(self, op: Operation, digest: str | None, token: str) -> None:
        def write(key: str) -> None:
            self.cache.record_upload(key, token, op.face.path or op.face.source if digest else None)
            self.cache.clear_pending(key, op.group_id, op.user_id)

        self._write_cache(op, digest, write)

    def _write_cache(self, op: Operation, digest: str | None, write: Callable[[str], None]) -> None:
        """``write`` the token cache about the image ``op`` uploads, named by ``digest`` (the sha256 of the
        bytes sent) or its URL; nothing for a face_token image or without a cache."""
        key = image_key(op.face.kind, digest, op.face.source) if op.face is not None else None
        if self.cache is None or key is None or op.user_id is None:
            return
        with self.cache_lock:
            try:
                write(key)
            except Exception:  # a cache that cannot be written costs a detect next time, not the apply
                log.warning("could not write the token cache", exc_info=True)


def _unmatched_face(op: Operation, token: str, error: FaceApiError) -> FaceApiError:
    """223105 on an add whose face the user does not hold under the planned token: the library knows the
    image under another face_token (detect and user/add disagree), or holds it on another user of the
    group. Either way facesync cannot match its faces: going on would plan to delete and re-add them."""
    what = op.face.source if op.face is not None else token
    return FaceApiError(error.error_code, (
        f"the library says the face of {what} is already there, but {_where(op)} does not hold it as {token}: "
        "the service stores this image under another face_token than detect answers, or keeps it on another "
        "user of the group; facesync cannot match faces and stops before deleting any"), error.log_id,
        hint="run `facesync doctor --target ...` to see how this service answers, and keep the token cache "
             "(it learns the stored tokens from user/add answers)")


def _where(op: Operation) -> str:
    return f"{op.group_id}/{op.user_id}" if op.user_id is not None else op.group_id
