"""Measurements that need a process of their own (peak memory is per process): one JSON line on stdout.

    python -m tests.bench.child planner FACES [--memory]   make_plan on planner_inputs(FACES), best of 3
    python -m tests.bench.child deepdiff USERS              DeepDiff on the same shape, USERS users
    python -m tests.bench.child load MANIFEST [--hash]      facesync.manifest.load

Time is measured without tracemalloc (it slows allocation-heavy code several times); ``--memory``
runs again under tracemalloc and reports the peak of what the measured call allocated, above its inputs.
``load`` reports the process's peak RSS (ru_maxrss) instead, the figure a user's machine sees.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
import tracemalloc

RUNS = 3  # the best of RUNS: the least disturbed by the rest of the machine


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def planner(faces: int, memory: bool) -> dict:
    from facesync.plan.planner import make_plan
    from tests.bench.generate import planner_inputs

    desired, live = planner_inputs(faces)
    actual = sum(len(u.images) for g in desired.groups for u in g.users)
    seconds = []
    for _ in range(RUNS):
        gc.collect()
        started = time.perf_counter()
        plan = make_plan(desired, live, created_at="2024-01-01T00:00:00Z", force=True)
        seconds.append(time.perf_counter() - started)
        operations = len(plan.operations)
        del plan
    result = {"faces": actual, "seconds": min(seconds), "operations": operations, "peak_rss_mb": _peak_rss_mb()}
    if memory:
        gc.collect()
        tracemalloc.start()
        plan = make_plan(desired, live, created_at="2024-01-01T00:00:00Z", force=True)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        result["peak_bytes"] = peak
        del plan
    return result


def deepdiff(users: int) -> dict:
    from deepdiff import DeepDiff

    from tests.bench.generate import nested_dicts, planner_inputs

    desired, live = planner_inputs(users * 5)
    left, right = nested_dicts(desired, live)
    del desired, live
    gc.collect()
    started = time.perf_counter()
    diff = DeepDiff(right, left)
    seconds = time.perf_counter() - started
    return {"users": users, "seconds": seconds, "changes": sum(len(v) for v in diff.values())}


def load(manifest: str, hash_images: bool) -> dict:
    from facesync import manifest as manifests

    before = _peak_rss_mb()
    started = time.perf_counter()
    loaded = manifests.load(manifest, hash_images=hash_images)
    seconds = time.perf_counter() - started
    users = sum(len(g.users) for g in loaded.desired.groups)
    return {"users": users, "seconds": seconds, "peak_rss_mb": _peak_rss_mb(), "rss_before_mb": before}


def main(argv: list[str]) -> int:
    what, arg, *flags = argv
    if what == "planner":
        result = planner(int(arg), "--memory" in flags)
    elif what == "deepdiff":
        result = deepdiff(int(arg))
    elif what == "load":
        result = load(arg, "--hash" in flags)
    else:
        raise SystemExit(f"unknown measurement {what!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
