"""For the incremental-refresh tests: a manifest loaded as the commands load it, and the full refresh and
plan that ``incremental.plan_tracked`` falls back to, from the library-level steps themselves."""

from __future__ import annotations

from facesync import manifest
from facesync.api.protocol import FaceLibrary
from facesync.cache import TokenCache
from facesync.model import Desired
from facesync.plan.planner import make_plan, user_info_to_read
from facesync.refresh import read_user_info, refresh
from facesync.resolve import resolve_images


def load(path: str) -> Desired:
    return manifest.load(path, hash_images=False).desired


def full_plan(desired: Desired, library: FaceLibrary, cache: TokenCache, *, force: bool = False) -> dict:
    """``plan_full`` and ``finish`` for ``plan_tracked``: refresh, resolve, read kept user_info, plan."""
    def plan_full():
        live = refresh(library, desired)
        resolution = resolve_images(desired, live, library, cache)
        live = read_user_info(library, live, user_info_to_read(resolution.desired, live))
        return resolution.desired, live, make_plan(resolution.desired, live, force=force), resolution.stats

    return {"plan_full": plan_full, "finish": lambda plan, _desired: plan}
