"""What a photo must show for Baidu to register it, judged from the faces a local detector found.

Pure functions over ``FaceScan`` records: no image decoding here (see ``detector.py``), so the rules are
the same for ``validate --check-faces`` and for ``facesync serve --detect-faces``.

What Baidu documents, and what facesync chooses where it is silent:

- No face found: user/add, user/update and detect answer 222202 ("pic not has face"). Documented.
- A face too small: neither the API description facesync follows nor its restatement gives a minimum
  face size. ASSUMPTION: ``MIN_FACE_PIXELS`` = 48, the smallest face box (in the image's own pixels)
  facesync accepts; Baidu's recognition needs a face of some size and 48×48 is the figure its face
  products commonly state. ``validate`` reports a smaller face; the emulator treats it as not found
  (222202), since a detector that cannot see a face cannot register it.
- Several faces: Baidu documents no refusal; user/add answers with one face's location, so it registers
  one of them (which one is not documented). ``validate`` reports it, because the face registered may
  not be the person meant; the emulator accepts the photo, as Baidu's documents say it does.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

MIN_FACE_PIXELS = 48  # ASSUMPTION (see above): smallest face box side, in the image's pixels
NO_FACE_CODE = 222202  # "pic not has face" (api/errors.py holds the message)
UNREADABLE_CODE = 222203  # "image check fail": the image cannot be parsed


@dataclass(frozen=True, slots=True, order=True)
class FaceBox:
    """A face found, in the pixels of the image as stored (left, top, width, height)."""

    left: int
    top: int
    width: int
    height: int

    @property
    def side(self) -> int:
        return min(self.width, self.height)


@dataclass(frozen=True, slots=True)
class FaceScan:
    """What the detector saw in one image.

    ``smallest_findable``: the smallest face side (image pixels) the detector looked for; a large image
    is scanned shrunk, so smaller faces in it are not found at all. ``decodable`` False: the bytes have
    an image's magic number but no picture the decoder can read.
    """

    width: int
    height: int
    faces: tuple[FaceBox, ...]
    smallest_findable: int
    decodable: bool = True

    @property
    def largest(self) -> FaceBox | None:
        return max(self.faces, key=lambda box: box.width * box.height, default=None)


class Problem(str, Enum):
    UNREADABLE = "unreadable"
    NO_FACE = "no_face"
    SEVERAL_FACES = "several_faces"
    SMALL_FACE = "small_face"


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    message: str
    hint: str


def findings(scan: FaceScan, min_face: int = MIN_FACE_PIXELS) -> tuple[Finding, ...]:
    """Every reason Baidu may refuse (or misregister) this photo, as far as a local detector can tell."""
    if not scan.decodable:
        return (Finding(Problem.UNREADABLE, "the image cannot be decoded",
                        "re-save the photo as a plain PNG or JPEG"),)
    if not scan.faces:
        looked = (f"; faces under {scan.smallest_findable} px are not looked for in a "
                  f"{scan.width}×{scan.height} image" if scan.smallest_findable > min_face else "")
        return (Finding(Problem.NO_FACE, f"no face found{looked}",
                        "Baidu refuses a photo without a face it can find (222202): use a clear, frontal, "
                        "well-lit photo of one face"),)
    found: list[Finding] = []
    if len(scan.faces) > 1:
        found.append(Finding(Problem.SEVERAL_FACES, f"{len(scan.faces)} faces found, one expected",
                             "Baidu registers only one face of a photo, not necessarily this person's: "
                             "crop the photo to one face"))
    largest = scan.largest
    if largest.side < min_face:
        found.append(Finding(Problem.SMALL_FACE,
                             f"the face is {largest.width}×{largest.height} px, under {min_face}×{min_face}",
                             "use a photo where the face is larger (crop closer or use a higher resolution)"))
    return tuple(found)


def emulator_refusal(scan: FaceScan, min_face: int = MIN_FACE_PIXELS) -> int | None:
    """The code the emulator answers for this photo, or None to accept it: 222203 when it cannot be
    decoded, 222202 without a face of at least ``min_face`` pixels; several faces are accepted (Baidu
    documents no refusal for them)."""
    if not scan.decodable:
        return UNREADABLE_CODE
    if not any(box.side >= min_face for box in scan.faces):
        return NO_FACE_CODE
    return None
