"""Local face checks: see, before Baidu does, whether a photo shows exactly one face large enough.

Optional: the detector comes with the ``faces`` extra (``pip install 'facesync[faces]'``); without it,
``FaceCheckUnavailable`` says which command installs it. ``rules`` judges (pure), ``detector`` finds
faces in bytes, ``cache`` keeps scans by content hash, ``check`` turns a manifest into diagnostics, and
``emulator_face_check`` gives ``facesync serve --detect-faces`` its answer for each uploaded image.
"""

from __future__ import annotations

from collections.abc import Callable

from facesync.faces.detector import FaceCheckUnavailable, install_command
from facesync.faces.rules import MIN_FACE_PIXELS, FaceScan, emulator_refusal

__all__ = ["MIN_FACE_PIXELS", "FaceCheckUnavailable", "FaceScan", "emulator_face_check", "install_command"]


def emulator_face_check() -> Callable[[bytes], int | None]:
    """image bytes → the error code Baidu would answer (222202 no face, 222203 undecodable) or None.

    Raises ``FaceCheckUnavailable`` now, not at the first upload, when the detector is missing.
    """
    from facesync.faces.detector import Detector

    detector = Detector()

    def check(data: bytes) -> int | None:
        return emulator_refusal(detector.scan(data))

    return check
