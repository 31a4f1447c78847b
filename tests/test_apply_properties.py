"""Over random live and desired libraries: plan, execute on the real local library, and it converges.

After one apply a fresh refresh equals the manifest within its scope (a user_info the manifest does not
manage kept as it was) and a second plan is empty; a second execute of the same plan (a re-run after a
crash) converges too. Under both variants of Baidu's undocumented behaviours.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from facesync.local.store import LocalLibrary
from facesync.model import Desired, DesiredGroup, DesiredUser, Policy
from tests.test_apply import execute, image_file, plan_for, seed_library, snapshot, token_of

GROUPS = ["a", "b", "c"]
MANAGED = ["a", "b"]
USERS = ["u0", "u1", "u2", "u3"]
SEEDS = list(range(8))

seeds = st.sets(st.sampled_from(SEEDS), min_size=1, max_size=3)
live_libraries = st.dictionaries(
    st.sampled_from(GROUPS),
    st.dictionaries(st.sampled_from(USERS), st.tuples(seeds, st.sampled_from(["", "x", "y"])), max_size=3),
    max_size=3,
)
desired_groups = st.dictionaries(
    st.sampled_from(MANAGED),
    st.tuples(st.dictionaries(st.sampled_from(USERS), st.tuples(seeds, st.sampled_from([None, "x", "z"])),
                              max_size=3),
              st.booleans()),
    min_size=1, max_size=2,
)

pytestmark = pytest.mark.both_unknowns


def build_desired(folder: Path, groups: dict, delete_unlisted: bool) -> Desired:
    return Desired(
        groups=tuple(
            DesiredGroup(group_id, tuple(DesiredUser(user_id, tuple(image_file(folder, s) for s in sorted(images)), info)
                                         for user_id, (images, info) in sorted(users.items())), prune=prune)
            for group_id, (users, prune) in sorted(groups.items())),
        policy=Policy(delete_unlisted_groups=delete_unlisted),
    )


def expected_view(live: dict, groups: dict) -> dict:
    """{group: {user: (tokens, user_info)}} the library must hold after the apply.

    Without prune, users the manifest does not name stay as they are and named users keep extra faces;
    a user_info the manifest does not manage stays as it was (None: anything, for a new user, which a
    copy may give its source's user_info).
    """
    view = {}
    for group_id, (users, prune) in groups.items():
        before = live.get(group_id, {})
        result = {} if prune else {u: (tuple(sorted(token_of(s) for s in faces)), info)
                                   for u, (faces, info) in before.items()}
        for user_id, (images, info) in users.items():
            faces = set(images) | (set(before[user_id][0]) if not prune and user_id in before else set())
            kept_info = before[user_id][1] if user_id in before else None
            result[user_id] = (tuple(sorted(token_of(s) for s in faces)), kept_info if info is None else info)
        view[group_id] = result
    return view


def own_faces(layout: dict) -> dict:
    """``layout`` with seed s of user number k turned into a seed only that user has (the same in every group)."""
    return {g: {u: ({s + 10 * (USERS.index(u) + 1) for s in seeds}, info) for u, (seeds, info) in users.items()}
            for g, users in layout.items()}


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(live=live_libraries, groups=desired_groups, delete_unlisted=st.booleans(),
       concurrency=st.integers(min_value=1, max_value=6))
def test_one_apply_converges_and_a_rerun_is_already_done(live, groups, delete_unlisted, concurrency, unknowns):
    if unknowns == "harsh":  # one face is never on two users of a group there: give each user its own faces
        live, groups = own_faces(live), {g: (own_faces({g: users})[g], prune) for g, (users, prune) in groups.items()}
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        library = LocalLibrary(str(folder / "lib.db"), unknowns=unknowns)
        try:
            seed_library(library, {g: {u: (sorted(faces), info) for u, (faces, info) in users.items()}
                                   for g, users in live.items()})
            desired = build_desired(folder, groups, delete_unlisted)
            plan = plan_for(library, desired)
            result = execute(plan, library, concurrency=concurrency)
            assert result.ok, (result.failures, result.problems)

            expected = expected_view(live, groups)
            actual = snapshot(library, sorted(groups))
            for group_id, users in expected.items():
                for user_id, (_faces, info) in users.items():
                    if info is None and user_id in actual.get(group_id, {}):
                        actual[group_id][user_id] = (actual[group_id][user_id][0], None)
            assert actual == expected
            group_ids = set(library.group_getlist(0, 1000).ids)
            if delete_unlisted:
                assert group_ids <= set(groups)
            else:
                assert set(live) - set(groups) <= group_ids
            assert plan_for(library, desired).empty
            assert library.consistency_problems() == []

            rerun = execute(plan, library, concurrency=concurrency)
            assert rerun.ok, (rerun.failures, rerun.problems)
            assert plan_for(library, desired).empty
        finally:
            library.close()
