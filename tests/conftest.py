"""Shared fixtures: a local library in a temporary file, and ``facesync serve`` on 127.0.0.1.

Both follow the ``unknowns`` fixture: ``lenient`` by default (``pytest --unknowns harsh`` runs every
unmarked test harsh), and each of ``lenient`` and ``harsh`` for a test (or a module, with
``pytestmark = pytest.mark.both_unknowns``) marked ``both_unknowns``; a test marked ``lenient_unknowns``
states the lenient variant's own answers, so it runs lenient whatever ``--unknowns`` says. The fixture
also sets ``FACESYNC_UNKNOWNS`` for the test, so ``local:`` targets opened by commands (in this process
or in a child) answer the same way.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from facesync.local.unknowns import CHOICES, ENV_VAR, LENIENT
from tests.support.cli import checkout_first, command_shim
from tests.support.server import start_server

# every child process (python -m facesync, python -c ...) imports this checkout, installed or not
os.environ.update(checkout_first(os.environ))

# CI (CI=true) draws the property tests' examples from a fixed seed, so that a red build means a change
# broke them; plain `pytest` on a developer's machine explores new examples on every run.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

BOTH_UNKNOWNS = "both_unknowns"
LENIENT_UNKNOWNS = "lenient_unknowns"


def pytest_addoption(parser):
    parser.addoption("--unknowns", choices=CHOICES, default=LENIENT,
                     help="the variant of tests not marked both_unknowns (default: lenient)")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", f"{BOTH_UNKNOWNS}: run the test once with lenient and once with harsh unknowns "
                   "(the library, serve and unknowns fixtures follow)")
    config.addinivalue_line(
        "markers", f"{LENIENT_UNKNOWNS}: the test states the lenient variant's answers: it runs lenient even "
                   "under --unknowns harsh")


def pytest_generate_tests(metafunc):
    if metafunc.definition.get_closest_marker(BOTH_UNKNOWNS) and "unknowns" in metafunc.fixturenames:
        metafunc.parametrize("unknowns", CHOICES, indirect=True)


@pytest.fixture(scope="session", autouse=True)
def facesync_command(tmp_path_factory):
    """The ``facesync`` command on PATH, as an install puts it there (a checkout that is not installed
    gets one that runs ``python -m facesync``)."""
    folder = command_shim(tmp_path_factory.mktemp("bin"))
    if folder is None:
        yield
        return
    before = os.environ["PATH"]
    os.environ["PATH"] = f"{folder}{os.pathsep}{before}"
    try:
        yield
    finally:
        os.environ["PATH"] = before


@pytest.fixture(autouse=True)
def unknowns(request, monkeypatch) -> str:
    """"lenient" or "harsh": how the library and servers of this test answer where Baidu is silent."""
    value = getattr(request, "param", None) or request.config.getoption("--unknowns")
    if request.node.get_closest_marker(LENIENT_UNKNOWNS):
        value = LENIENT
    monkeypatch.setenv(ENV_VAR, value)
    return value


@pytest.fixture
def library(tmp_path, unknowns):
    from facesync.local.store import LocalLibrary

    lib = LocalLibrary(str(tmp_path / "library.db"), unknowns=unknowns)
    yield lib
    lib.close()


@pytest.fixture
def serve(tmp_path, unknowns):
    """A factory: ``serve("--qps", "5")`` starts a server (stopped after the test) and returns it."""
    started = []

    def start(*extra: str, db: str | None = None):
        server = start_server(db or str(tmp_path / f"serve{len(started)}.db"), "--unknowns", unknowns, *extra)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
