"""Small valid images with unique bytes, made on the fly, so tests and benchmarks need no fixtures on disk."""

from __future__ import annotations

import struct
import zlib


def png(seed: int, size: int = 2) -> bytes:
    """A ``size``×``size`` RGB PNG whose pixels (and so bytes and face_token) are unique to ``seed``."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    pixel = seed.to_bytes(8, "big", signed=False)[-3:]
    rows = b"".join(b"\x00" + pixel * size for _ in range(size))
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    marker = chunk(b"tEXt", b"seed\x00" + str(seed).encode())  # unique even when pixels repeat
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + marker + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def jpeg(seed: int) -> bytes:
    """A JPEG's structure (JFIF, a comment unique to ``seed``, a 1×1 frame header, a scan), unique bytes."""

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload

    return (b"\xff\xd8" + segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00")
            + segment(0xFE, b"seed " + str(seed).encode())
            + segment(0xC0, b"\x08\x00\x01\x00\x01\x01\x01\x11\x00")
            + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00") + b"\x00" + b"\xff\xd9")


def bmp(seed: int) -> bytes:
    """A 1×1 24-bit BMP whose pixel is unique to ``seed`` (seeds below 2**24)."""
    pixel = seed.to_bytes(3, "big") + b"\x00"
    header = b"BM" + struct.pack("<IHHI", 14 + 40 + 4, 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, 1, 1, 1, 24, 0, 4, 2835, 2835, 0, 0)
    return header + info + pixel


GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
