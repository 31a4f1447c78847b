"""Rebuild the example and test photos from the public-domain pictures they come from (see SOURCES.md).

Run on demand, with scikit-image, matplotlib, Pillow and the ``faces`` extra installed (none of them is
needed to use the photos):

    python -m tests.photos.make_photos

Each photo is a different crop, scale or mirror image of a portrait, saved as a small JPEG, so every
file has its own bytes (its own face_token) and shows one face the detector finds; the script checks
what the detector sees in each before writing anything.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib.cbook
import skimage.data
from PIL import Image, ImageOps

from facesync.faces.detector import Detector
from facesync.faces.rules import MIN_FACE_PIXELS

ROOT = Path(__file__).resolve().parents[2]
SKIMAGE_DATA = Path(os.path.dirname(skimage.data.__file__))


def astronaut() -> Image.Image:
    return Image.open(SKIMAGE_DATA / "astronaut.png").convert("RGB")


def hopper() -> Image.Image:
    return Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")


def coffee() -> Image.Image:
    return Image.open(SKIMAGE_DATA / "coffee.png").convert("RGB")


def crop(image: Image.Image, box: tuple[int, int, int, int], side: int, mirror: bool = False) -> Image.Image:
    """``box`` (left, top, right, bottom) of ``image``, scaled so its longest side is ``side``."""
    part = image.crop(box)
    scale = side / max(part.size)
    part = part.resize((round(part.width * scale), round(part.height * scale)), Image.LANCZOS)
    return ImageOps.mirror(part) if mirror else part


def jpeg(image: Image.Image, quality: int = 80) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()


def group_photo() -> Image.Image:
    """Two portraits side by side: two faces in one picture."""
    left = crop(astronaut(), (110, 20, 340, 280), 240)
    right = crop(hopper(), (110, 60, 420, 400), 240)
    canvas = Image.new("RGB", (left.width + right.width, 240), (200, 200, 200))
    canvas.paste(left, (0, 0))
    canvas.paste(right, (left.width, 0))
    return canvas


def small_face_photo() -> Image.Image:
    """The astronaut portrait shrunk until the face is about 36 pixels wide, on a plain background."""
    small = crop(astronaut(), (0, 0, 512, 512), 180)
    canvas = Image.new("RGB", (240, 240), (190, 190, 200))
    canvas.paste(small, (30, 30))
    return canvas


# name → (picture, faces the detector must find, whether the face must be at least the minimum size)
QUICKSTART = {
    "alice_1.jpg": (lambda: crop(astronaut(), (120, 20, 330, 260), 200), 1, True),
    "alice_2.jpg": (lambda: crop(astronaut(), (90, 0, 360, 300), 220, mirror=True), 1, True),
    "bob.jpg": (lambda: crop(hopper(), (100, 40, 430, 420), 220), 1, True),
    "carol.jpg": (lambda: crop(hopper(), (130, 80, 400, 360), 200, mirror=True), 1, True),
    "dave.jpg": (lambda: crop(astronaut(), (140, 40, 310, 230), 180, mirror=True), 1, True),
    "erin.jpg": (lambda: crop(hopper(), (60, 0, 470, 480), 240, mirror=True), 1, True),
}
TESTS = {
    "face_a.jpg": (lambda: crop(astronaut(), (100, 10, 350, 290), 200), 1, True),
    "face_b.jpg": (lambda: crop(hopper(), (90, 30, 440, 430), 200), 1, True),
    "face_c.jpg": (lambda: crop(astronaut(), (130, 30, 320, 240), 160, mirror=True), 1, True),
    "no_face.jpg": (lambda: crop(coffee(), (100, 0, 500, 400), 200), 0, False),
    "group.jpg": (group_photo, 2, True),
    "small_face.jpg": (small_face_photo, 1, False),
}


def build(folder: Path, photos: dict, detector: Detector) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (make, faces, large_enough) in photos.items():
        data = jpeg(make())
        scan = detector.scan(data)
        sides = [box.side for box in scan.faces]
        if len(scan.faces) != faces or (faces and (min(sides) >= MIN_FACE_PIXELS) != large_enough):
            raise SystemExit(f"{name}: the detector sees {len(scan.faces)} faces of sides {sides}; expected "
                             f"{faces}, {'at least' if large_enough else 'under'} {MIN_FACE_PIXELS} px")
        (folder / name).write_bytes(data)
        print(f"{folder.relative_to(ROOT) / name}: {len(data)} bytes, {scan.width}×{scan.height}, faces {sides}")


def main() -> None:
    detector = Detector()
    build(ROOT / "examples" / "quickstart" / "faces", QUICKSTART, detector)
    build(ROOT / "tests" / "photos", TESTS, detector)


if __name__ == "__main__":
    main()
