"""Turning an API image parameter into image bytes, answering with the codes Baidu uses.

Kept apart from the store so that the slow part (a URL download) runs before any database lock is taken,
and so that the rules are in one place: BASE64 text over ``MAX_BASE64_CHARS`` is refused with 222013
(the parameter itself is too long, whatever it contains); text that is not base64, or bytes that are not
PNG, JPEG or BMP by content, with 222203; a URL that cannot be fetched (network error, timeout, non-2xx
answer, more than the size cap) with 222204.
"""

from __future__ import annotations

import base64
import binascii
import re
import time

import requests

from facesync.images import MAX_BASE64_CHARS, is_accepted

_WHITESPACE = re.compile(r"\s+")


class ImageProblem(Exception):
    """An image parameter the library refuses; ``code`` is the Baidu error code to answer with."""

    def __init__(self, code: int, detail: str = ""):
        super().__init__(detail or str(code))
        self.code = code
        self.detail = detail


def decode_base64_image(text: str) -> bytes:
    """The image bytes of a BASE64 parameter (no ``data:`` prefix, line breaks tolerated)."""
    if len(text) > MAX_BASE64_CHARS:
        raise ImageProblem(222013, f"base64 image is {len(text)} characters, the limit is {MAX_BASE64_CHARS}")
    try:
        data = base64.b64decode(_WHITESPACE.sub("", text), validate=True)
    except (binascii.Error, ValueError) as error:
        raise ImageProblem(222203, "image is not valid base64") from error
    return check_image_bytes(data)


def check_image_bytes(data: bytes) -> bytes:
    """``data`` when it is a PNG, JPEG or BMP by content; GIF and anything else are refused."""
    if not is_accepted(data):
        raise ImageProblem(222203, "image is not PNG, JPEG or BMP (a signature without a valid header is not)")
    return data


def fetch_url_image(url: str, *, timeout: float, max_bytes: int) -> bytes:
    """The bytes at ``url``, streamed so that an oversize or slow answer is cut off early."""
    deadline = time.monotonic() + timeout
    try:
        with requests.get(url, timeout=timeout, stream=True, allow_redirects=True) as answer:
            if not 200 <= answer.status_code < 300:
                raise ImageProblem(222204, f"HTTP {answer.status_code}")
            declared = answer.headers.get("Content-Length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise ImageProblem(222204, f"image is {declared} bytes, the limit is {max_bytes}")
            chunks: list[bytes] = []
            received = 0
            for chunk in answer.iter_content(64 * 1024):
                received += len(chunk)
                if received > max_bytes:
                    raise ImageProblem(222204, f"image is over {max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise ImageProblem(222204, f"download took longer than {timeout} s")
                chunks.append(chunk)
    except requests.RequestException as error:
        raise ImageProblem(222204, type(error).__name__) from error
    return check_image_bytes(b"".join(chunks))
