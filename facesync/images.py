"""What the contract says an acceptable image is, judged by content, never by file name.

Shared by the manifest checks (refuse before any call) and the local library (answer as Baidu would).
"""

from __future__ import annotations

import hashlib

MAX_BASE64_CHARS = 2 * 1024 * 1024  # "编码后的图片大小不超过2M": the limit is on the encoded text
MAX_REQUEST_BYTES = 10 * 1024 * 1024

ACCEPTED_FORMATS = ("png", "jpeg", "bmp")


def sniff_format(data: bytes) -> str | None:
    """"png", "jpeg", "bmp", "gif" or None, from the leading magic bytes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"BM") and len(data) >= 26:
        return "bmp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    return None


def is_accepted(data: bytes) -> bool:
    return sniff_format(data) in ACCEPTED_FORMATS


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
