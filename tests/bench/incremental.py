"""Scenario 6 of ``tests.bench.run``: incremental refresh on a 20,000-user library (5,000 with --quick).

Every figure is counted at ``facesync serve`` (its stats), for ``facesync plan`` run as a subprocess:

- an in-sync library: ``--refresh full`` against ``--refresh incremental`` (default audit, 1 %);
- 10 users' user_info changed in the manifest: the incremental plan's calls beyond the listings and the
  audit (about 2 a user: face/getlist and user/get), and its operations against the full plan's;
- a user deleted out of band (through the library file, behind the server's back): runs until an
  incremental plan adds it again (1: every listing is read);
- a face deleted out of band from a user in sync: runs of ``--refresh incremental --audit A`` until a plan
  adds it back, against the window ceil(users / A) the audit promises.

    python -m tests.bench.run --only 6
"""

from __future__ import annotations

import json
import math

from facesync.incremental import default_audit
from tests.bench.generate import LibrarySpec, people, populate, write_manifest

WINDOW_AUDIT = 1000  # the face-deletion rows use a larger audit than the default, so the window is 20 runs
CHANGED = 10


def scenario_incremental(settings) -> list:
    """Rows for the table of ``tests.bench.run``."""
    from tests.bench import run as r

    users_per_group = 250 if settings.quick else 1000
    spec = LibrarySpec(groups=20, users_per_group=users_per_group, faces_min=1, faces_max=2, shared=0.0,
                       user_info=True, seed=6)
    users = spec.groups * users_per_group
    root = settings.workdir / "s6"
    manifest = write_manifest(root, spec)
    db = root / "library.db"
    populate(db, spec)
    persons = people(spec)
    cache = root / "cache"
    state = root / "state.json"

    def plan(server, *extra: str) -> tuple[dict, dict]:
        args = ["plan", str(manifest), "--target", server.base_url, "--qps", r.PLAN_QPS, "--state", str(state),
                "--format", "json", *extra]
        server.reset()
        done, _ = r.facesync(args, server, cache)
        if done.returncode != 0:
            raise RuntimeError(f"facesync {' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return json.loads(done.stdout), server.stats()["counters"]

    def reads(counters: dict) -> int:
        return sum(n for endpoint, n in counters.items() if endpoint.startswith("faceset/"))

    command = f"{r.RUN} --only 6 → `facesync plan faceset.yaml --target URL --state state.json --refresh ...`"
    rows = []
    with r.serving(db) as server:
        plan(server, "--refresh", "full")  # fills the token cache and the state
        full_plan, full = plan(server, "--refresh", "full")
        noop_plan, noop = plan(server, "--refresh", "incremental")
        if full_plan["operations"] or noop_plan["operations"]:
            raise RuntimeError("the library was expected in sync")
        share = reads(noop) / reads(full)
        audit = default_audit(users)
        pages = noop.get("faceset/group/getlist", 0) + noop.get("faceset/group/getusers", 0)
        rows.append(r.Row(
            f"6. incremental no-op plan of an in-sync library: {spec.groups} groups, {users} users "
            f"(default audit {audit})",
            f"{reads(noop)} calls ({pages} listing pages + {reads(noop) - pages} audit reads) vs full refresh "
            f"{reads(full)} calls: {share:.2%}", "≤ 2 % of the full refresh", f"{share / 0.02:.2f}", share <= 0.02,
            command + " (full, then incremental)"))

        changed = [person.user_id for person in persons[:: len(persons) // CHANGED]][:CHANGED]
        text = manifest.read_text()
        for user_id in changed:
            person = next(p for p in persons if p.user_id == user_id)
            before = f'{user_id}:\n        user_info: "{person.user_info}"'
            if before not in text:
                raise RuntimeError(f"{user_id} not found in the manifest as written by generate.py")
            text = text.replace(before, f'{user_id}:\n        user_info: "{person.user_info}, renamed"')
        manifest.write_text(text)
        ten_plan, ten = plan(server, "--refresh", "incremental")
        extra = reads(ten) - reads(noop)
        full_ten_plan, _ = plan(server, "--refresh", "full")
        agree = _operations(ten_plan) == _operations(full_ten_plan)
        rows.append(r.Row(
            f"6. incremental plan, {CHANGED} users' user_info changed in the manifest",
            f"{reads(ten)} calls = {pages} listing pages + {reads(noop) - pages} audit + {extra} for the changed "
            f"users; {len(ten_plan['operations'])} operations, the same as the full plan's: {'yes' if agree else 'NO'}",
            f"≈ {2 * CHANGED} reads + pages + audit; same operations as full", f"{extra / (2 * CHANGED):.2f}",
            agree and extra <= 2 * CHANGED + 2, command + " (incremental, then full; operations compared)"))

        from facesync.local.store import LocalLibrary

        deleted = persons[len(persons) // 2 + 1]
        victim = deleted.user_id
        with LocalLibrary(str(db)) as library:
            library.user_delete(deleted.groups[0], victim)
        runs = _runs_until(lambda: plan(server, "--refresh", "incremental")[0], victim, limit=3)
        rows.append(r.Row(
            "6. a user deleted out of band: incremental runs until the plan adds it back",
            f"{runs} run(s)", "1 (every listing is read)", f"{runs:.2f}", runs == 1,
            command + " incremental, after `user/delete` behind the server"))

        two_faces = [p for p in persons if len(p.face_seeds) == 2 and p.user_id not in changed and p.user_id != victim]
        target = two_faces[-1]  # late in the audit's order (ties go by user_id): near the worst case
        with LocalLibrary(str(db)) as library:
            face = library.face_getlist(target.groups[0], target.user_id).faces[0].face_token
            library.face_delete(target.groups[0], target.user_id, face)
        window = math.ceil(users / WINDOW_AUDIT)
        runs = _runs_until(lambda: plan(server, "--refresh", "incremental", "--audit", str(WINDOW_AUDIT))[0],
                           target.user_id, limit=window + 2)
        rows.append(r.Row(
            f"6. a face deleted out of band from a user in sync: incremental runs with --audit {WINDOW_AUDIT} "
            "until the plan adds it back",
            f"{runs} runs (window ceil({users} / {WINDOW_AUDIT}) = {window}; with the default audit of {audit}: "
            f"{math.ceil(users / audit)} runs)", f"≤ {window} runs", f"{runs / window:.2f}", runs <= window,
            command + f" incremental --audit {WINDOW_AUDIT}, after `face/delete` behind the server"))
    return rows


def _operations(plan: dict) -> list:
    return [{key: value for key, value in op.items() if key != "index"} for op in plan["operations"]]


def _runs_until(make_plan, user_id: str, *, limit: int) -> int:
    for run in range(1, limit + 1):
        if any(op.get("user_id") == user_id for op in make_plan()["operations"]):
            return run
    return limit + 1
