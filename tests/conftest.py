"""Shared fixtures: a local library in a temporary file, and ``facesync serve`` on 127.0.0.1."""

from __future__ import annotations

import pytest

from tests.support.server import start_server


@pytest.fixture
def library(tmp_path):
    from facesync.local.store import LocalLibrary

    lib = LocalLibrary(str(tmp_path / "library.db"))
    yield lib
    lib.close()


@pytest.fixture
def serve(tmp_path):
    """A factory: ``serve("--qps", "5")`` starts a server (stopped after the test) and returns it."""
    started = []

    def start(*extra: str, db: str | None = None):
        server = start_server(db or str(tmp_path / f"serve{len(started)}.db"), *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
