"""What passes as a PNG, JPEG or BMP: the magic bytes and a header that makes sense, never a bare signature."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path

import pytest

from facesync.api.protocol import Image
from facesync.images import MIN_IMAGE_BYTES, is_accepted, sniff_format
from tests.support.cli import run_facesync
from tests.support.images import GIF, bmp, jpeg, png
from tests.support.server import ApiClient

ROOT = Path(__file__).resolve().parent.parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_with_header(width: int, height: int, depth: int = 8, colour: int = 2, crc: int | None = None) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    checksum = zlib.crc32(b"IHDR" + header) if crc is None else crc
    rest = png(1)[33:]  # the chunks after IHDR of a real image
    return PNG_SIGNATURE + struct.pack(">I", 13) + b"IHDR" + header + struct.pack(">I", checksum) + rest


def jpeg_without_frame() -> bytes:
    """SOI and a JFIF segment padded out with a comment, then the end: no frame header at all."""
    app0 = b"\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    comment = b"\xff\xfe\x00\x22" + b"x" * 32
    return b"\xff\xd8" + app0 + comment + b"\xff\xd9"


def jpeg_frame(width: int, height: int) -> bytes:
    return jpeg(1).replace(b"\xff\xc0\x00\x0b\x08\x00\x01\x00\x01", b"\xff\xc0\x00\x0b\x08"
                           + struct.pack(">HH", height, width))


def bmp_with(header_size: int = 40, planes: int = 1, bits: int = 24, width: int = 1) -> bytes:
    good = bmp(5)
    return good[:14] + struct.pack("<IiiHH", header_size, width, 1, planes, bits) + good[30:]


GOOD = {"png": png(3), "jpeg": jpeg(3), "bmp": bmp(3)}
EXAMPLES = sorted(path for folder in (ROOT / "examples", ROOT / "tests" / "photos") for pattern in ("*.png", "*.jpg")
                  for path in folder.rglob(pattern))

BAD = {
    "png signature alone": PNG_SIGNATURE,
    "png signature and zeros": PNG_SIGNATURE + bytes(300),
    "png signature and noise": PNG_SIGNATURE + b"\x07" * 300,
    "png of width 0": png_with_header(0, 5),
    "png of height 2^31": png_with_header(5, 2**31),
    "png bit depth 3": png_with_header(5, 5, depth=3),
    "png colour type 5": png_with_header(5, 5, colour=5),
    "png header checksum wrong": png_with_header(5, 5, crc=1),
    "jpeg SOI alone": b"\xff\xd8\xff",
    "jpeg SOI and zeros": b"\xff\xd8\xff" + bytes(300),
    "jpeg without a frame": jpeg_without_frame(),
    "jpeg of width 0": jpeg_frame(0, 1),
    "bmp magic alone": b"BM",
    "bmp magic and zeros": b"BM" + bytes(300),
    "bmp unknown header size": bmp_with(header_size=41),
    "bmp two planes": bmp_with(planes=2),
    "bmp 7 bits a pixel": bmp_with(bits=7),
    "bmp width 0": bmp_with(width=0),
    "bmp pixels past the end": bmp(5)[:-4],
    "tiny": b"\x89PNG",
}


@pytest.mark.parametrize("kind", GOOD)
def test_real_images_pass_whole_and_by_their_first_bytes(kind):
    data = GOOD[kind]
    assert sniff_format(data, complete=True) == kind and is_accepted(data)
    assert sniff_format(data[:MIN_IMAGE_BYTES]) == kind  # what a manifest check reads of a file


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_the_example_photos_pass(path):
    data = path.read_bytes()
    kind = "png" if path.suffix == ".png" else "jpeg"
    assert sniff_format(data, complete=True) == kind and sniff_format(data[:MIN_IMAGE_BYTES]) == kind


@pytest.mark.parametrize("name", BAD)
def test_a_signature_without_a_valid_header_is_no_image(name):
    assert sniff_format(BAD[name], complete=True) is None
    assert not is_accepted(BAD[name])


def test_only_the_whole_image_shows_a_bad_checksum_or_a_missing_frame():
    for data in (BAD["png header checksum wrong"], BAD["jpeg without a frame"]):
        assert sniff_format(data[:MIN_IMAGE_BYTES]) is not None  # a prefix cannot tell
        assert sniff_format(data, complete=True) is None


def test_gif_is_still_named():
    assert sniff_format(GIF) == "gif" and not is_accepted(GIF)


def test_the_library_refuses_a_bare_signature(library):
    library.group_add("g")
    for data in (PNG_SIGNATURE, BAD["png signature and zeros"], BAD["jpeg without a frame"], BAD["bmp two planes"]):
        with pytest.raises(Exception) as raised:
            library.user_add("g", "u", Image.from_bytes(data))
        assert getattr(raised.value, "error_code", None) == 222203
    assert library.group_getusers("g").ids == ()


def test_serve_refuses_a_bare_signature(serve):
    api = ApiClient(serve())
    api.ok("faceset/group/add", group_id="g")
    for data in (PNG_SIGNATURE, BAD["png of width 0"]):
        answer = api.call("faceset/user/add", group_id="g", user_id="u", image_type="BASE64",
                          image=base64.b64encode(data).decode())
        assert answer["error_code"] == 222203
        detected = api.call("detect", image_type="BASE64", image=base64.b64encode(data).decode())
        assert detected["error_code"] == 222203
    api.ok("faceset/user/add", group_id="g", user_id="u", image_type="BASE64",
           image=base64.b64encode(jpeg(9)).decode())


def test_validate_refuses_a_bare_png_signature(tmp_path):
    (tmp_path / "faces").mkdir()
    (tmp_path / "faces" / "fake.png").write_bytes(PNG_SIGNATURE)
    (tmp_path / "faces" / "real.png").write_bytes(png(1))
    manifest = tmp_path / "faceset.yaml"
    manifest.write_text("version: 1\ngroups:\n  g:\n    users:\n      u:\n"
                        "        images: [faces/real.png, faces/fake.png]\n", encoding="utf-8")
    done = run_facesync("validate", str(manifest), cwd=tmp_path)
    assert done.returncode == 1
    assert "fake.png is not a PNG, JPEG or BMP image" in done.stderr + done.stdout
    assert "real.png" not in done.stderr + done.stdout
