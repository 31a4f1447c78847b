"""Compare the frontal-face detectors that install from the package index with their model inside.

    pip install scikit-image 'opencv-python-headless<5'
    python -m tests.bench.face_detectors

Not part of facesync: the record of why the ``faces`` extra is OpenCV's ``haarcascade_frontalface_alt2``
(README, "Checking faces"). Each detector runs on the same pictures, all shipped in scikit-image or in
tests/photos: 48 portraits (two people, 4 crops × 3 sizes × mirror), the 100 faces and 100 non-faces of
``skimage.data.lfw_subset()`` (25×25, scaled to 100×100: hard, low-resolution faces), and 54 photos
without a face (18 of scikit-image's pictures, each also mirrored and halved). Times are CPU time per
image on one thread.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import cv2
import numpy as np
import skimage.data
from skimage.feature import Cascade

cv2.setNumThreads(1)
PHOTOS = Path(__file__).resolve().parent.parent / "photos"
SKIMAGE_DATA = Path(os.path.dirname(skimage.data.__file__))
NO_FACE = ["coffee.png", "chelsea.png", "rocket.jpg", "coins.png", "hubble_deep_field.jpg", "brick.png", "grass.png",
           "gravel.png", "page.png", "text.png", "retina.jpg", "ihc.png", "moon.png", "color.png", "logo.png",
           "motorcycle_left.png", "cell.png", "clock_motion.png"]


def grey(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def resized(image: np.ndarray, side: int) -> np.ndarray:
    scale = side / max(image.shape[:2])
    return cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)),
                      interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def portraits() -> list[np.ndarray]:
    out = []
    for image, (left, top, right, bottom) in ((grey(SKIMAGE_DATA / "astronaut.png"), (175, 65, 275, 165)),
                                              (grey(PHOTOS / "face_b.jpg"), (40, 40, 150, 150))):
        for pad in (0.3, 0.6, 1.0, 1.5):
            w, h = right - left, bottom - top
            crop = image[max(0, int(top - pad * h)):int(bottom + pad * h), max(0, int(left - pad * w)):int(right + pad * w)]
            for side in (160, 320, 640):
                out += [resized(crop, side), cv2.flip(resized(crop, side), 1)]
    return out


def sets() -> dict[str, list[np.ndarray]]:
    lfw = skimage.data.lfw_subset()
    as_images = [cv2.resize((face * 255).astype(np.uint8), (100, 100), interpolation=cv2.INTER_CUBIC) for face in lfw]
    no_face = []
    for name in NO_FACE:
        image = grey(SKIMAGE_DATA / name)
        no_face += [image, cv2.flip(image, 1), resized(image, max(image.shape[:2]) // 2)]
    return {"portraits": portraits(), "LFW faces": as_images[:100], "photos without a face": no_face,
            "LFW non-faces": as_images[100:]}


def opencv(cascade_name: str, work_side: int | None, scale_factor: float, min_neighbors: int):
    cascade = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, cascade_name))

    def detect(image: np.ndarray) -> int:
        if work_side and max(image.shape[:2]) > work_side:
            image = resized(image, work_side)
        return len(cascade.detectMultiScale(image, scaleFactor=scale_factor, minNeighbors=min_neighbors,
                                            minSize=(20, 20)))
    return detect


def skimage_lbp():
    cascade = Cascade(str(SKIMAGE_DATA / "lbpcascade_frontalface_opencv.xml"))

    def detect(image: np.ndarray) -> int:
        found = cascade.detect_multi_scale(image.astype(np.float32) / 255, scale_factor=1.2, step_ratio=1,
                                           min_size=(24, 24), max_size=(min(image.shape), min(image.shape)),
                                           min_neighbor_number=4)
        rects = [[d["c"], d["r"], d["width"], d["height"]] for d in found]
        return len(cv2.groupRectangles(rects + rects, 1, 0.2)[0]) if rects else 0  # it does not merge windows
    return detect


DETECTORS = {
    "opencv haarcascade_frontalface_alt2, shrunk to 400 px (facesync's settings)":
        opencv("haarcascade_frontalface_alt2.xml", 400, 1.15, 4),
    "opencv haarcascade_frontalface_alt2, full size": opencv("haarcascade_frontalface_alt2.xml", None, 1.1, 5),
    "opencv haarcascade_frontalface_default, full size": opencv("haarcascade_frontalface_default.xml", None, 1.1, 5),
    "scikit-image Cascade (lbpcascade_frontalface_opencv), full size": skimage_lbp(),
}


def main() -> None:
    pictures = sets()
    print("| detector | " + " | ".join(f"{name} ({len(images)})" for name, images in pictures.items())
          + " | CPU ms per picture |")
    print("|---|" + "---|" * (len(pictures) + 1))
    for name, detect in DETECTORS.items():
        cells, spent, count = [], 0.0, 0
        for label, images in pictures.items():
            started = time.process_time()
            found = [detect(image) for image in images]
            spent += time.process_time() - started
            count += len(images)
            hits = sum(n == 1 for n in found) if "non" not in label and "without" not in label else sum(n > 0 for n in found)
            what = "exactly one face" if "non" not in label and "without" not in label else "false faces"
            cells.append(f"{hits} {what}")
        print(f"| {name} | " + " | ".join(cells) + f" | {spent / count * 1000:.0f} |")


if __name__ == "__main__":
    main()
