"""Finding frontal faces in image bytes, locally, with the model shipped inside the installed package.

The detector is OpenCV's Haar cascade ``haarcascade_frontalface_alt2.xml``, read from ``cv2.data`` of
``opencv-python-headless`` (the optional ``faces`` extra): nothing is downloaded at run time. OpenCV 5
wheels no longer ship the cascades, hence the ``<5`` bound in pyproject.toml. The README's "Checking
faces" section says why this detector and not another (accuracy, wheel size and speed, measured).

Speed: a large photo is shrunk so that its longest side is ``WORK_SIDE`` pixels before the search;
faces then need to be at least ``SMALLEST_WINDOW`` pixels in the shrunk image. A registration photo's
face fills much of it, so nothing is lost there, and each image costs tens of milliseconds.
"""

from __future__ import annotations

import importlib.metadata
import os
import threading

from facesync.errors import ConfigError
from facesync.faces.rules import FaceBox, FaceScan

CASCADE = "haarcascade_frontalface_alt2.xml"
WORK_SIDE = 400  # longest side, in pixels, of the image the cascade searches
SMALLEST_WINDOW = 20  # the cascade's own window: the smallest face it can find, in searched pixels
SCALE_FACTOR = 1.15
MIN_NEIGHBORS = 4
# Part of every cached result's key: change it whenever a setting above changes what is found.
SETTINGS = f"{CASCADE}:{WORK_SIDE}:{SMALLEST_WINDOW}:{SCALE_FACTOR}:{MIN_NEIGHBORS}"


class FaceCheckUnavailable(ConfigError):
    """The face check needs the optional ``faces`` extra, which is not installed."""


DISTRIBUTION = "baidu-facesync"  # what pyproject.toml's name says, if the metadata cannot tell


def install_command() -> str:
    """The pip command that adds the extra to this installation, under its distribution's own name
    (the one installed that declares the ``faces`` extra)."""
    try:
        for name in dict.fromkeys(importlib.metadata.packages_distributions().get("facesync", ())):
            if "faces" in (importlib.metadata.metadata(name).get_all("Provides-Extra") or ()):
                return f"pip install '{name}[faces]'"
    except Exception:  # noqa: BLE001, S110 - the metadata of other packages must never stop this message
        pass
    return f"pip install '{DISTRIBUTION}[faces]'"


def _require_opencv():
    try:
        import cv2
        import numpy
    except ImportError:
        raise FaceCheckUnavailable(
            "checking faces needs the optional face detector, which is not installed",
            hint=f"install it with: {install_command()}   (from a checkout: pip install '.[faces]')") from None
    return cv2, numpy


class Detector:
    """Frontal faces in PNG, JPEG or BMP bytes. Safe to share between threads: OpenCV's cascade is not,
    so each thread gets its own (loading one takes a few milliseconds)."""

    def __init__(self):
        self._cv2, self._np = _require_opencv()
        self._cascade_path = os.path.join(self._cv2.data.haarcascades, CASCADE)
        if not os.path.isfile(self._cascade_path):
            raise FaceCheckUnavailable(f"the installed OpenCV ({self._cv2.__version__}) ships no {CASCADE}",
                                       hint=f"install a version that does: {install_command()}")
        self._local = threading.local()
        self.version = f"opencv-{self._cv2.__version__}:{SETTINGS}"

    def _cascade(self):
        cascade = getattr(self._local, "cascade", None)
        if cascade is None:
            cascade = self._local.cascade = self._cv2.CascadeClassifier(self._cascade_path)
        return cascade

    def scan(self, data: bytes) -> FaceScan:
        cv2 = self._cv2
        grey = cv2.imdecode(self._np.frombuffer(data, self._np.uint8), cv2.IMREAD_GRAYSCALE)
        if grey is None or grey.size == 0:
            return FaceScan(0, 0, (), SMALLEST_WINDOW, decodable=False)
        height, width = grey.shape[:2]
        shrink = min(1.0, WORK_SIDE / max(height, width))
        if shrink < 1.0:
            grey = cv2.resize(grey, (max(1, round(width * shrink)), max(1, round(height * shrink))),
                              interpolation=cv2.INTER_AREA)
        found = self._cascade().detectMultiScale(grey, scaleFactor=SCALE_FACTOR, minNeighbors=MIN_NEIGHBORS,
                                                 minSize=(SMALLEST_WINDOW, SMALLEST_WINDOW))
        boxes = tuple(sorted(FaceBox(round(x / shrink), round(y / shrink), round(w / shrink), round(h / shrink))
                             for x, y, w, h in (tuple(int(v) for v in box) for box in found)))
        return FaceScan(width, height, boxes, round(SMALLEST_WINDOW / shrink))
