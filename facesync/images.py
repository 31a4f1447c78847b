"""What the contract says an acceptable image is, judged by content, never by file name.

Shared by the manifest checks (refuse before any call) and the local library (answer as Baidu would).
"""

from __future__ import annotations

import hashlib
import struct
import zlib

MAX_BASE64_CHARS = 2 * 1024 * 1024  # "编码后的图片大小不超过2M": the limit is on the encoded text

ACCEPTED_FORMATS = ("png", "jpeg", "bmp")
MIN_IMAGE_BYTES = 32  # no PNG, JPEG or BMP with a picture in it is smaller: shorter is a bare signature
MAX_DIMENSION = 65535  # pixels a side; JPEG's own ceiling, and far beyond any face photo

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_BIT_DEPTHS = {0: {1, 2, 4, 8, 16}, 2: {8, 16}, 3: {1, 2, 4, 8}, 4: {8, 16}, 6: {8, 16}}  # by colour type
_JPEG_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_BARE_MARKERS = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RSTn: no length field
_BMP_HEADER_SIZES = frozenset({12, 40, 52, 56, 64, 108, 124})
_BMP_BIT_COUNTS = frozenset({1, 4, 8, 16, 24, 32})


def sniff_format(data: bytes, *, complete: bool = False) -> str | None:
    """"png", "jpeg", "bmp", "gif" or None, from the content: the magic bytes and a header that makes sense.

    ``data`` may be only the start of a file (at least its first ``MIN_IMAGE_BYTES``, or the whole file
    when it is shorter): every header field found there is checked, so a bare signature is no image.
    With ``complete`` it is the whole image, and a PNG's header checksum must match and a JPEG must reach
    its frame header. GIF is named by its magic alone, so that it can be refused by name.
    """
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(data) < MIN_IMAGE_BYTES:
        return None
    if data.startswith(_PNG_SIGNATURE):
        return "png" if _png_header_ok(data, complete) else None
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg" if _jpeg_header_ok(data, complete) else None
    if data.startswith(b"BM"):
        return "bmp" if _bmp_header_ok(data, complete) else None
    return None


def _sane(width: int, height: int) -> bool:
    return 0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION


def _png_header_ok(data: bytes, complete: bool) -> bool:
    """The first chunk is a 13-byte IHDR with sane dimensions and a valid depth / colour type pair."""
    if data[8:16] != b"\x00\x00\x00\x0dIHDR":
        return False
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", data[16:29])
    if not _sane(width, height) or depth not in _PNG_BIT_DEPTHS.get(colour, ()):
        return False
    if compression or filtering or interlace not in (0, 1):
        return False
    if complete:
        return len(data) >= 33 and struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29])
    return True


def _jpeg_header_ok(data: bytes, complete: bool) -> bool:
    """Well-formed marker segments from the start; a frame header (SOFn) with sane dimensions before the
    scan. A prefix that ends before the frame header passes unless ``complete``."""
    at = 2
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            return False
        marker = data[at + 1]
        if marker == 0xFF:  # fill byte
            at += 1
            continue
        if marker in _JPEG_BARE_MARKERS:
            at += 2
            continue
        if marker in (0xD8, 0xD9, 0xDA, 0x00):  # a second SOI, the end or the scan before any frame
            return False
        length = struct.unpack(">H", data[at + 2:at + 4])[0]
        if length < 2:
            return False
        if marker in _JPEG_FRAMES:
            if at + 9 > len(data):
                return not complete
            height, width = struct.unpack(">HH", data[at + 5:at + 9])
            return _sane(width, height) and length >= 8
        at += 2 + length
    return not complete


def _bmp_header_ok(data: bytes, complete: bool) -> bool:
    """A known DIB header size, sane dimensions, one plane, a usual bit count; complete: the pixels'
    offset lies inside the file."""
    offset, header_size = struct.unpack("<II", data[10:18])
    if header_size not in _BMP_HEADER_SIZES:
        return False
    if header_size == 12:
        width, height, planes, bits = struct.unpack("<HHHH", data[18:26])
    else:
        width, height, planes, bits = struct.unpack("<iiHH", data[18:30])
    if not _sane(width, abs(height)) or planes != 1 or bits not in _BMP_BIT_COUNTS:
        return False
    return not complete or 14 + header_size <= offset < len(data)


def is_accepted(data: bytes) -> bool:
    """True for a whole PNG, JPEG or BMP image."""
    return sniff_format(data, complete=True) in ACCEPTED_FORMATS


def base64_length(byte_count: int) -> int:
    """Length of the base64 text of ``byte_count`` bytes (padding included)."""
    return 4 * ((byte_count + 2) // 3)


def fits_base64_limit(byte_count: int) -> bool:
    return base64_length(byte_count) <= MAX_BASE64_CHARS


def local_face_token(data: bytes) -> str:
    """The local library's face_token of an image: md5 of its bytes (same image, same token)."""
    return hashlib.md5(data).hexdigest()


def detect_face_token(data: bytes) -> str:
    """A token of the same shape that never equals ``local_face_token``: what a harsh detect answers."""
    return hashlib.sha256(data).hexdigest()[:32]
