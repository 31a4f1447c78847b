"""LocalLibrary shared by threads and by processes: the library stays consistent and loses no write."""

from __future__ import annotations

import multiprocessing
import os
import random
import subprocess
import sys
import threading

import pytest

from facesync.api.errors import AlreadyExistsError, NotFoundError
from facesync.api.protocol import Image, iter_user_ids
from facesync.local.store import LocalLibrary
from tests.support.images import png

GROUPS = ("g0", "g1")
USERS = tuple(f"u{n}" for n in range(12))


def assert_consistent(library: LocalLibrary) -> None:
    """Every listed user has a face, nothing is orphaned, and the listings add up to the counts."""
    assert library.consistency_problems() == []
    users = faces = 0
    for group in library.group_getlist(0, 1000).ids:
        for user in iter_user_ids(library, group):
            listed = library.face_getlist(group, user).faces
            assert listed, f"{group}/{user} has no face"
            assert len({f.face_token for f in listed}) == len(listed)
            users += 1
            faces += len(listed)
    counts = library.counts()
    assert (counts.users, counts.faces) == (users, faces)


def _churn(library: LocalLibrary, seed: int, steps: int) -> int:
    """Random adds, deletes, updates and copies on a small set of users; returns how many succeeded."""
    rng = random.Random(seed)
    done = 0
    for _ in range(steps):
        group, user = rng.choice(GROUPS), rng.choice(USERS)
        action = rng.random()
        try:
            if action < 0.45:
                library.user_add(group, user, Image.from_bytes(png(rng.randrange(40))), user_info=str(seed))
            elif action < 0.65:
                faces = library.face_getlist(group, user).faces
                library.face_delete(group, user, rng.choice(faces).face_token)
            elif action < 0.75:
                library.user_update(group, user, Image.from_bytes(png(rng.randrange(40))))
            elif action < 0.85:
                library.user_delete(rng.choice((group, "@ALL")), user)
            else:
                library.user_copy(user, group, GROUPS[1 - GROUPS.index(group)])
            done += 1
        except (NotFoundError, AlreadyExistsError):
            pass  # another thread got there first: the expected answers of a shared library
    return done


def test_threads_adding_and_deleting_leave_a_consistent_library(library):
    for group in GROUPS:
        library.group_add(group)
    results: list[int] = []
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        try:
            results.append(_churn(library, seed, 150))
        except BaseException as error:  # noqa: BLE001 (surfaced in the main thread below)
            errors.append(error)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(results) == 8 and sum(results) > 100
    assert_consistent(library)


@pytest.fixture
def uncapped(tmp_path):
    """A library without the 20-faces cap: these tests pile hundreds of concurrent adds on one user."""
    with LocalLibrary(str(tmp_path / "uncapped.db"), max_faces_per_user=None) as library:
        yield library


def test_threads_lose_no_add(uncapped):
    library = uncapped
    library.group_add("g")

    def add(worker: int) -> None:
        for n in range(40):
            library.user_add("g", "shared", Image.from_bytes(png(worker * 1000 + n)))
            library.user_add("g", f"own{worker}", Image.from_bytes(png(worker * 1000 + n)))

    threads = [threading.Thread(target=add, args=(worker,)) for worker in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(library.face_getlist("g", "shared").faces) == 240
    assert library.counts().faces == 480
    assert_consistent(library)


def test_concurrent_group_add_has_one_winner(library):
    answers: list[str] = []
    barrier = threading.Barrier(6)

    def add() -> None:
        barrier.wait()
        try:
            library.group_add("race")
            answers.append("ok")
        except AlreadyExistsError as error:
            answers.append(str(error.error_code))

    threads = [threading.Thread(target=add) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(answers) == ["223101"] * 5 + ["ok"]


def _process_writer(path: str, worker: int, count: int) -> None:
    with LocalLibrary(path, max_faces_per_user=None) as library:
        for n in range(count):
            library.user_add("g", "shared", Image.from_bytes(png(worker * 10_000 + n)))
            library.user_add("g", f"p{worker}", Image.from_bytes(png(worker * 10_000 + n)))
        _churn(library, worker, 60)


def test_two_processes_write_one_file(tmp_path):
    path = str(tmp_path / "shared.db")
    with LocalLibrary(path) as library:
        library.group_add("g")
        for group in GROUPS:
            library.group_add(group)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_process_writer, args=(path, worker, 60)) for worker in (1, 2)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(120)
    assert [process.exitcode for process in workers] == [0, 0]
    with LocalLibrary(path) as library:
        assert len(library.face_getlist("g", "shared").faces) == 120
        assert len(library.face_getlist("g", "p1").faces) == 60
        assert len(library.face_getlist("g", "p2").faces) == 60
        assert_consistent(library)


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="needs fork")
def test_a_forked_child_opens_its_own_connection(tmp_path):
    library = LocalLibrary(str(tmp_path / "lib.db"))
    library.group_add("g")
    library.user_add("g", "parent", Image.from_bytes(png(1)))

    child = multiprocessing.get_context("fork").Process(target=_add_in_child, args=(library,))
    child.start()
    child.join(60)
    assert child.exitcode == 0
    library.user_add("g", "parent", Image.from_bytes(png(3)))
    assert library.group_getusers("g").ids == ("parent", "child")
    assert len(library.face_getlist("g", "parent").faces) == 2
    library.close()


def _add_in_child(library: LocalLibrary) -> None:
    library.user_add("g", "child", Image.from_bytes(png(2)))
    library.close()


_KILLED_WRITER = """
import os, signal, sys
from facesync.api.protocol import Image
from facesync.local.store import LocalLibrary
from tests.support.images import png
library = LocalLibrary(sys.argv[1])
library.group_add("g")
library.user_add("g", "u", Image.from_bytes(png(1)), user_info="committed")
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_committed_write_survives_kill_9(tmp_path):
    path = str(tmp_path / "lib.db")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    finished = subprocess.run([sys.executable, "-c", _KILLED_WRITER, path], cwd=root, timeout=60, check=False,
                              env={**os.environ, "PYTHONPATH": root})
    assert finished.returncode == -9
    with LocalLibrary(path) as library:
        assert library.user_get("g", "u").memberships[0].user_info == "committed"
        assert library.consistency_problems() == []


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_short_lived_threads_do_not_leak_connections(library):
    """A server answers each request on a new thread; the library must not keep a connection per thread."""
    library.group_add("g")
    before = len(os.listdir("/proc/self/fd"))
    for n in range(120):
        thread = threading.Thread(target=library.group_getusers, args=("g",))
        thread.start()
        thread.join(10)
    assert len(os.listdir("/proc/self/fd")) - before < 40
