"""``facesync doctor``: observe, on the user's own app, the answers Baidu's documentation leaves open.

facesync is built to stay correct whichever way the service answers where its documentation is silent
(the contract's UNKNOWN table, the README's "Semantics where Baidu's documentation is silent"). The
doctor asks the service itself, so a person knows which answers their app really gives:

- Everything happens in scratch groups the doctor creates (``facesync_doctor_<nonce>_*``, random so two
  runs and the user's own groups never meet) and always removes: in ``finally``, also after a failure,
  Ctrl-C or SIGTERM; while it removes them, further Ctrl-C/SIGTERM are held back until it is done.
- The faces are the user's own photo(s): the service needs a real face. Distinct faces are distinct bytes
  of the same photo, made by adding a JPEG comment segment or a PNG text chunk (the pixels stay the
  same). A service that recognises those as one face is reported as such, not hidden.
- Each observation is independent: one that the service refuses in an unexpected way is reported with
  its code and log_id, and the others still run. Every row says which variant of the emulator
  (``lenient`` / ``harsh``, see local/unknowns.py) the answer matches, so a report from Baidu can be
  compared with both.
- Calls are counted (retries included for remote targets) and stay under ``BUDGET``; the QPS limit is
  observed with one burst of ``QPS_BURST`` cheap reads sent at once without retries.
- Groups of more than 500 faces are deleted in the background. Observing it needs a group of 501 faces:
  501 user/add calls (at most 20 faces per user, and user/copy only copies faces added elsewhere), five
  times the budget, so that row says so instead of observing it; apply copes with either answer.
"""

from __future__ import annotations

import itertools
import logging
import secrets
import signal
import struct
import textwrap
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from facesync.api.errors import (
    FACE_CAP_CODE,
    AuthError,
    FaceApiError,
    FaceExistsError,
    NotFoundError,
    QpsLimitError,
    QuotaExhaustedError,
)
from facesync.api.protocol import MAX_FACES_PER_USER, PAGE_MAX, CallRecord, FaceLibrary, Image
from facesync.errors import FacesyncError
from facesync.images import fits_base64_limit, sniff_format
from facesync.scratch import remove_groups

log = logging.getLogger(__name__)

BUDGET = 100
QPS_BURST = 8
SCRATCH_PREFIX = "facesync_doctor_"
LENIENT, HARSH = "lenient", "harsh"
_INFO = "facesync doctor probe"
_MOST_PER_PROBE = MAX_FACES_PER_USER + 2  # the face cap probe: one read and up to 21 adds
_RESERVED = QPS_BURST + 4  # the QPS burst, and removing the three scratch groups then checking


class DoctorError(FacesyncError):
    """The doctor cannot run: no usable photo, or its budget would be exceeded."""


@dataclass(frozen=True)
class Finding:
    """One observed answer: ``matches`` is the emulator variant it equals (None: no variant applies)."""

    key: str
    assumption: str
    observed: str
    matches: str | None  # "lenient"/"harsh"; "as assumed"/"NOT as assumed" for rows without variants
    facesync: str
    log_id: int | None = None  # of the refusal observed, for Baidu support


@dataclass(frozen=True)
class Report:
    target: str
    findings: tuple[Finding, ...]
    calls: int
    budget: int
    scratch_groups: tuple[str, ...]
    removed: bool  # every scratch group is gone

    def to_json(self) -> dict[str, Any]:
        return {"target": self.target, "calls": self.calls, "budget": self.budget,
                "scratch_groups": list(self.scratch_groups), "scratch_groups_removed": self.removed,
                "findings": [asdict(finding) for finding in self.findings]}


# ---- probe images ---------------------------------------------------------------------------------------


def image_variant(data: bytes, label: str) -> bytes:
    """``data`` with ``label`` written into a JPEG comment or PNG text chunk: new bytes, the same pixels."""
    kind = sniff_format(data)
    text = label.encode("ascii")
    if kind == "jpeg":
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(text) + 2) + text + data[2:]
    if kind == "png":
        end_of_header = 8 + 4 + 4 + struct.unpack(">I", data[8:12])[0] + 4
        body = b"tEXt" + b"Comment\x00" + text
        chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)
        return data[:end_of_header] + chunk + data[end_of_header:]
    raise DoctorError(f"a {kind or 'non-image'} file cannot be varied without changing its pixels",
                      hint="pass a JPEG or PNG photo of one face (--image FILE)")


def read_photos(paths: Sequence[str]) -> list[bytes]:
    if not paths:
        raise DoctorError("facesync doctor needs a photo of a face: the service refuses images without one",
                          hint="pass --image FILE (a JPEG or PNG photo of one face; your own face is fine)")
    photos = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise DoctorError(f"cannot read {path}: {error.strerror or error}") from None
        if sniff_format(data) not in ("jpeg", "png"):  # a BMP cannot carry a comment
            raise DoctorError(f"{path} is not a JPEG or PNG image", hint="pass a JPEG or PNG photo of one face")
        if not fits_base64_limit(len(data) + 200):
            raise DoctorError(f"{path} is too large for the API (2 MB of base64)", hint="pass a smaller photo")
        photos.append(data)
    return photos


class _Faces:
    """Fresh faces on demand: each call gives bytes never sent before (photos taken in turn)."""

    def __init__(self, photos: Sequence[bytes], nonce: str):
        self.photos, self.nonce, self.count = list(photos), nonce, 0

    def fresh(self) -> Image:
        photo = self.photos[self.count % len(self.photos)]
        self.count += 1
        return Image.from_bytes(image_variant(photo, f"{_INFO} {self.nonce} {self.count}"))


# ---- counting calls -------------------------------------------------------------------------------------


class _Meter:
    """Counts every call the library reports to its observers (a remote one reports each retry too)."""

    def __init__(self, budget: int):
        self.budget, self.calls = budget, 0
        self._guard = threading.Lock()

    def __call__(self, record: CallRecord) -> None:
        self.spend(1)

    def spend(self, calls: int) -> None:
        with self._guard:
            self.calls += calls


class _OverBudget(Exception):
    pass


# ---- signals --------------------------------------------------------------------------------------------


@contextmanager
def _interruptible() -> Iterator[None]:
    """SIGTERM interrupts like Ctrl-C, so the scratch groups are removed either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- the observations ---------------------------------------------------------------------------------------


def _code(error: FaceApiError) -> str:
    return f"{error.error_code} {error.error_msg}" if error.error_code else str(error)


class _Doctor:
    def __init__(self, library: FaceLibrary, meter: _Meter, faces: _Faces, nonce: str):
        self.library, self.meter, self.faces = library, meter, faces
        base = SCRATCH_PREFIX + nonce
        self.group, self.other, self.missing = base + "_a", base + "_b", base + "_c"
        self.scratch = (self.group, self.other, self.missing)
        self.findings: list[Finding] = []

    def note(self, key: str, observed: str, matches: str | None = None, error: FaceApiError | None = None) -> None:
        self.findings.append(_finding(key, observed, matches, error))

    def info_of(self, group_id: str, user_id: str) -> str:
        record = self.library.user_get(group_id, user_id)
        return next((m.user_info for m in record.memberships if m.group_id == group_id), "")

    def run(self, probes: Sequence[Callable[[], None]]) -> None:
        for probe in probes:
            if self.meter.calls + _MOST_PER_PROBE + _RESERVED > self.meter.budget:
                raise _OverBudget
            try:
                probe()
            except (QuotaExhaustedError, AuthError):
                raise  # nothing more can be observed today, or with these keys
            except FaceApiError as error:
                why = _code(error)
                if isinstance(error, FaceExistsError):  # a varied copy met as a face already there
                    why += " (the service takes the varied copies of one photo for one face: pass several photos)"
                self.note(probe.__name__, f"could not observe: {why}", "not observed", error)

    # each probe is named after the key of the row it adds (see _ASSUMPTION)

    def user_info_on_add(self) -> None:
        self.library.group_add(self.group)
        self.library.group_add(self.other)
        self.library.user_add(self.group, "u1", self.faces.fresh(), user_info=_INFO)
        self.library.user_add(self.group, "u1", self.faces.fresh())
        kept = self.info_of(self.group, "u1") == _INFO
        self.note("user_info_on_add", "keeps user_info" if kept else "clears user_info", LENIENT if kept else HARSH)

    def user_info_on_update(self) -> None:
        self.library.user_add(self.group, "u1", self.faces.fresh(), user_info=_INFO)
        self.library.user_update(self.group, "u1", self.faces.fresh())
        kept = self.info_of(self.group, "u1") == _INFO
        self.note("user_info_on_update", "keeps user_info" if kept else "clears user_info",
                  LENIENT if kept else HARSH)

    def detect_token(self) -> None:
        image = self.faces.fresh()
        detected = [face.face_token for face in self.library.detect(image).faces]
        stored = self.library.user_add(self.group, "u2", image).face_token
        if stored in detected:
            self.note("detect_token", "equal", LENIENT)
        else:
            self.note("detect_token", f"different (detect {', '.join(detected) or 'no face'}, stored {stored})",
                      HARSH)

    def face_cap(self) -> None:
        held = len(self.library.face_getlist(self.group, "u2").faces)
        for count in range(held + 1, MAX_FACES_PER_USER + 2):
            try:
                self.library.user_add(self.group, "u2", self.faces.fresh())
            except FaceApiError as error:
                self.note("face_cap", f"face {count} refused: {_code(error)}", error=error)
                return
        self.note("face_cap", f"{MAX_FACES_PER_USER + 1} faces accepted: no cap at {MAX_FACES_PER_USER}")

    def face_token_reuse(self) -> None:
        token = self.library.user_add(self.group, "u3", self.faces.fresh()).face_token
        self.library.user_delete(self.group, "u3")  # that face is on no user any more
        try:
            self.library.user_add(self.group, "u3", Image.from_face_token(token))
        except NotFoundError as error:
            self.note("face_token_reuse", f"refused: {_code(error)}", HARSH, error)
            return
        self.note("face_token_reuse", "accepted", LENIENT)

    def same_face_two_users(self) -> None:
        image = self.faces.fresh()
        self.library.user_add(self.group, "u4", image)
        try:
            self.library.user_add(self.group, "u5", image)
        except FaceApiError as error:
            self.note("same_face_two_users", f"refused: {_code(error)}", HARSH, error)
            return
        self.note("same_face_two_users", "allowed", LENIENT)

    def copy_into_existing(self) -> None:
        self.library.user_copy("u4", self.group, self.other)
        try:
            self.library.user_copy("u4", self.group, self.other)
        except FaceApiError as error:
            self.note("copy_into_existing", f"refused: {_code(error)}", error=error)
            return
        self.note("copy_into_existing", "accepted")

    def copy_linked(self) -> None:
        self.library.user_add(self.group, "u4", self.faces.fresh())
        copied = len(self.library.face_getlist(self.other, "u4").faces)
        self.note("copy_linked", "independent" if copied == 1 else f"linked ({copied} faces in the copy)")

    def implicit_group(self) -> None:
        try:
            self.library.user_add(self.missing, "u1", self.faces.fresh())
        except NotFoundError as error:
            self.note("implicit_group", f"refused: {_code(error)}", LENIENT, error)
            return
        self.note("implicit_group", "creates the group", HARSH)

    def page_length(self) -> None:
        try:
            page = self.library.group_getusers(self.group, 0, PAGE_MAX + 1)
        except FaceApiError as error:
            self.note("page_length", f"refused: {_code(error)}", LENIENT, error)
            return
        self.note("page_length", f"served as at most {PAGE_MAX} ({len(page.ids)} ids)", HARSH)

    def list_order(self) -> None:
        users = list(self.library.group_getusers(self.group, 0, 100).ids)
        inserted = [user_id for user_id in ("u1", "u2", "u3", "u4", "u5") if user_id in users]
        self.note("list_order", "insertion order" if users == inserted else f"another order: {', '.join(users)}")


# What each row asks, and what facesync does whatever the answer. ``_ASSUMED``: the answer facesync's
# documents assume for the rows without an emulator variant.
_ASSUMPTION = {
    "user_info_on_add": "user/add without user_info on an existing user",
    "user_info_on_update": "user/update without user_info",
    "detect_token": "detect's face_token vs the token user/add stores",
    "face_cap": f"faces per user in a group (documented: {MAX_FACES_PER_USER}), and the code of one more",
    "face_token_reuse": "FACE_TOKEN of a face no user holds any more",
    "same_face_two_users": "the same face on two users of one group",
    "copy_into_existing": "user/copy into a group where the user exists",
    "copy_linked": "is a copy linked to its source?",
    "implicit_group": "user/add into a missing group",
    "page_length": f"`length` above {PAGE_MAX}",
    "list_order": "list order of group/getusers",
    "qps": f"QPS limit ({QPS_BURST} reads sent at once, no retry)",
    "background_delete": "group/delete of more than 500 faces",
    "budget": f"all of the above within {BUDGET} calls",
}
_FACESYNC = {
    "user_info_on_add": "always sends the user_info it manages, and for a user whose user_info it does not "
                        "manage sends back what it read, so either answer keeps user_info",
    "user_info_on_update": "same as for user/add: user_info is never left out of a call that could clear it",
    "detect_token": "matches by the stored token, learned from user/add answers (keep the token cache); the "
                    "answer seen here is kept there: where tokens differ, a plan that would replace faces it "
                    "could not match stops (--reupload replaces them)",
    "face_cap": "validate refuses users with more than 20 images; apply reports the code if the cap is hit",
    "face_token_reuse": "re-adds faces from image bytes where the manifest has them, and never removes a "
                        "face's last copy before it is re-added",
    "same_face_two_users": "moves a face between two users of a group by removing it before adding it, in one "
                           "apply (a staging copy keeps a face known only by token alive)",
    "copy_into_existing": "checks the destination and adds only the missing faces",
    "copy_linked": "diffs each (group, user) on its own",
    "implicit_group": "creates every group before adding to it; never relies on implicit creation",
    "page_length": f"asks for at most {PAGE_MAX} per page, so neither answer matters",
    "list_order": "reads every page and sorts nothing it compares",
    "qps": "paces calls with --qps (default 10) and slows down on error 18; set --qps to the app's limit",
    "background_delete": "apply retries re-creating a group still being deleted for up to 10 minutes, then "
                          "asks to run it again later",
    "budget": "nothing: the rows after it were not observed",
}
_ASSUMED = {
    "face_cap": f"face {MAX_FACES_PER_USER + 1} refused: {FACE_CAP_CODE}",
    "copy_into_existing": "refused: 223102",
    "copy_linked": "independent",
    "list_order": "insertion order",
}


def _finding(key: str, observed: str, matches: str | None = None, error: FaceApiError | None = None) -> Finding:
    if matches is None and key in _ASSUMED:
        matches = "as assumed" if observed.startswith(_ASSUMED[key]) else "NOT as assumed"
    return Finding(key, _ASSUMPTION[key], observed, matches, _FACESYNC[key],
                   getattr(error, "log_id", None) if error is not None else None)


def _qps_finding(burst: Callable[[], FaceLibrary] | None, meter: _Meter) -> Finding:
    if burst is None:
        return _finding("qps", "no limit (the local library)")
    client = burst()
    barrier = threading.Barrier(QPS_BURST)

    def one(_):
        barrier.wait(30)
        try:
            client.group_getlist(0, 1)
            return None
        except FaceApiError as error:
            return error

    try:
        with ThreadPoolExecutor(max_workers=QPS_BURST) as pool:
            errors = list(pool.map(one, range(QPS_BURST)))
    finally:
        meter.spend(QPS_BURST)
        client.close()
    refused = sum(isinstance(error, QpsLimitError) for error in errors)
    other = [error for error in errors if error is not None and not isinstance(error, QpsLimitError)]
    if other:
        return _finding("qps", f"could not observe: {_code(other[0])}", "not observed", other[0])
    if refused:
        observed = f"{refused} of {QPS_BURST} refused with 18: the limit is below {QPS_BURST} calls/s"
    else:
        observed = f"all {QPS_BURST} answered: the limit is at least {QPS_BURST} calls/s"
    return _finding("qps", observed)


def examine(library: FaceLibrary, photos: Sequence[bytes], *, identity: str = "",
            burst: Callable[[], FaceLibrary] | None = None, budget: int = BUDGET,
            nonce: str | None = None) -> Report:
    """Observe every open question on ``library``, in scratch groups that are removed whatever happens."""
    nonce = nonce or secrets.token_hex(4)
    meter = _Meter(budget)
    library.observers.append(meter)
    doctor = _Doctor(library, meter, _Faces(photos, nonce), nonce)
    probes = (doctor.user_info_on_add, doctor.user_info_on_update, doctor.detect_token, doctor.face_cap,
              doctor.face_token_reuse, doctor.same_face_two_users, doctor.copy_into_existing, doctor.copy_linked,
              doctor.implicit_group, doctor.page_length, doctor.list_order)
    removed = False
    try:
        with _interruptible():
            try:
                doctor.run(probes)
            except _OverBudget:
                doctor.note("budget", f"stopped at {meter.calls} calls", "not observed")
            doctor.findings.append(_qps_finding(burst, meter))
            doctor.note("background_delete", f"not observed: it needs a group of 501 faces, 501 calls, over the "
                        f"budget of {budget}", "not observed")
    finally:
        removed = remove_groups(library, doctor.scratch)
        library.observers.remove(meter)
    if not removed:
        raise DoctorError("could not remove the scratch groups " + ", ".join(doctor.scratch),
                          hint="delete them by hand; they hold only copies of the probe photo")
    return Report(identity or library.identity, tuple(doctor.findings), meter.calls, budget,
                  doctor.scratch, removed)


# ---- output ---------------------------------------------------------------------------------------------


def render_text(report: Report) -> str:
    """A table for people: long cells wrap within their column."""
    widths = (34, 40, 14, 52)
    rows = [("assumption", "observed", "matches", "what facesync does about it")]
    rows += [(f.assumption, f.observed + (f" (log_id {f.log_id})" if f.log_id else ""), f.matches or "-",
              f.facesync) for f in report.findings]
    lines = [f"facesync doctor: {report.target}", ""]
    for number, row in enumerate(rows):
        cells = [textwrap.wrap(text, width) or [""] for text, width in zip(row, widths)]
        for parts in itertools.zip_longest(*cells, fillvalue=""):
            lines.append("  ".join(part.ljust(width) for part, width in zip(parts, widths)).rstrip())
        lines.append("-" * (sum(widths) + 6) if number == 0 else "")
    lines.append(f"{report.calls} calls of a budget of {report.budget}; scratch groups "
                 f"{', '.join(report.scratch_groups)} removed.")
    return "\n".join(lines)
