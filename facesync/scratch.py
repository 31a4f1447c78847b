"""Removing the scratch groups facesync makes on a user's app to observe it (``doctor``, apply's probe).

A scratch group holds copies of the user's photos, so it is removed whatever happens: the caller removes it
in ``finally``, and while it does, Ctrl-C and SIGTERM are held back (and raised again afterwards), so an
impatient second Ctrl-C cannot leave it behind.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from facesync.api.errors import FaceApiError, NotFoundError
from facesync.api.protocol import FaceLibrary

log = logging.getLogger(__name__)


@contextmanager
def shielded() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM back while cleaning up; the caller re-raises one that came."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: received.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def remove_groups(library: FaceLibrary, groups: Sequence[str]) -> bool:
    """Delete every scratch group; True when each is gone. Never raises an API error (it runs while
    unwinding); a Ctrl-C or SIGTERM that came meanwhile is raised as KeyboardInterrupt when it is done."""
    left = []
    with shielded() as received:
        for group_id in groups:
            try:
                library.group_delete(group_id)
            except NotFoundError:
                pass  # never made (or never created by the service)
            except FaceApiError as error:
                left.append(group_id)
                log.warning("could not remove the scratch group %s: %s", group_id, error)
    if received:
        raise KeyboardInterrupt
    return not left
