"""Synthetic face libraries for the benchmarks: a manifest with its images, and a library that matches it.

One model, three outputs, all deterministic for a given ``LibrarySpec``:

- ``people(spec)``: who is in which group with which faces (pure);
- ``write_manifest(root, spec)``: a plain-YAML manifest (``groups:`` for one-group users, ``people:``
  for users in two groups) and one small unique PNG per face under ``faces/``;
- ``populate(db, spec, out_of_sync=...)``: a LocalLibrary file holding exactly what the manifest wants,
  through the library's own API calls (user/add for a user's first group, user/copy for the second),
  leaving out a chosen share of users so that a plan has that much to add;
- ``planner_inputs(faces, ...)``: ``Desired`` and ``Live`` built in memory, no files and no library,
  for measuring the planner alone; ``nested_dicts`` turns them into the shape DeepDiff compares.

Choices: user i's home group is ``g{i // users_per_group}``; a shared user is also in the next group
(wrapping), so a group holds about ``users_per_group × (1 + shared)`` users. Face seeds are global
counters, so every face of the library is a distinct image with a distinct face_token.

Usage: ``python -m tests.bench.generate OUT_DIR [--groups 3 --users 100 --faces 1-3 --shared 0.1
--no-user-info --db OUT_DIR/library.db --out-of-sync 0.1]``.
"""

from __future__ import annotations

import argparse
import base64
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from facesync.api.protocol import Image, ImageType
from facesync.images import local_face_token
from facesync.model import (
    Desired,
    DesiredGroup,
    DesiredImage,
    DesiredUser,
    ImageKind,
    Live,
    LiveGroup,
    LiveUser,
)
from tests.support.images import png


@dataclass(frozen=True)
class LibrarySpec:
    groups: int = 3
    users_per_group: int = 100
    faces_min: int = 1
    faces_max: int = 3
    shared: float = 0.0  # share of users that are in two groups
    user_info: bool = True
    seed: int = 0


@dataclass(frozen=True)
class Person:
    user_id: str
    groups: tuple[str, ...]
    face_seeds: tuple[int, ...]
    user_info: str | None

    def image_paths(self) -> list[str]:
        return [face_path(seed) for seed in self.face_seeds]


def group_id(index: int) -> str:
    return f"g{index:03d}"


def face_path(seed: int) -> str:
    return f"faces/f{seed:07d}.png"


def people(spec: LibrarySpec) -> list[Person]:
    rng = random.Random(spec.seed)
    total = spec.groups * spec.users_per_group
    result = []
    next_seed = 1
    for i in range(total):
        home = i // spec.users_per_group
        groups = [group_id(home)]
        if spec.groups > 1 and rng.random() < spec.shared:
            groups.append(group_id((home + 1) % spec.groups))
        count = rng.randint(spec.faces_min, spec.faces_max)
        seeds = tuple(range(next_seed, next_seed + count))
        next_seed += count
        info = f"User {i}, synthetic" if spec.user_info else None
        result.append(Person(f"u{i:07d}", tuple(groups), seeds, info))
    return result


def face_count(persons: list[Person]) -> int:
    """Faces the library holds: one per image per group membership."""
    return sum(len(p.face_seeds) * len(p.groups) for p in persons)


# ---- manifest ---------------------------------------------------------------------------------------

def write_manifest(root: str | os.PathLike, spec: LibrarySpec, *, images: bool = True) -> Path:
    """Write ``root/faceset.yaml`` and (unless ``images`` is False) ``root/faces/*.png``; returns the manifest."""
    root = Path(root)
    (root / "faces").mkdir(parents=True, exist_ok=True)
    persons = people(spec)
    if images:
        for person in persons:
            for seed in person.face_seeds:
                (root / face_path(seed)).write_bytes(png(seed))
    lines = ["version: 1", "groups:"]
    by_group: dict[str, list[Person]] = {group_id(i): [] for i in range(spec.groups)}
    shared = []
    for person in persons:
        if len(person.groups) == 1:
            by_group[person.groups[0]].append(person)
        else:
            shared.append(person)
    for gid, members in by_group.items():
        lines.append(f"  {gid}:")
        if not members:
            lines.append("    users: {}")
            continue
        lines.append("    users:")
        for person in members:
            lines.append(f"      {person.user_id}:")
            lines.extend(_person_body(person, "        "))
    if shared:
        lines.append("people:")
        for person in shared:
            lines.append(f"  {person.user_id}:")
            lines.append(f"    groups: [{', '.join(person.groups)}]")
            lines.extend(_person_body(person, "    "))
    manifest = root / "faceset.yaml"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return manifest


def _person_body(person: Person, indent: str) -> list[str]:
    body = []
    if person.user_info is not None:
        body.append(f'{indent}user_info: "{person.user_info}"')
    body.append(f"{indent}images: [{', '.join(person.image_paths())}]")
    return body


# ---- library ----------------------------------------------------------------------------------------

def out_of_sync_users(persons: list[Person], share: float, seed: int = 1) -> set[str]:
    """The user_ids left out of the library: ``share`` of them, chosen deterministically."""
    if share <= 0:
        return set()
    rng = random.Random(seed)
    return {p.user_id for p in persons if rng.random() < share}


def populate(db: str | os.PathLike, spec: LibrarySpec, *, out_of_sync: float = 0.0) -> dict:
    """Make the LocalLibrary at ``db`` hold what the manifest of ``spec`` wants, less ``out_of_sync`` of
    its users; returns counts. Goes through LocalLibrary's API, as any client would."""
    from facesync.local.store import LocalLibrary

    persons = people(spec)
    missing = out_of_sync_users(persons, out_of_sync)
    started = time.monotonic()
    calls = 0
    with LocalLibrary(str(db)) as library:
        for i in range(spec.groups):
            library.group_add(group_id(i))
            calls += 1
        for person in persons:
            if person.user_id in missing:
                continue
            home, *others = person.groups
            for seed in person.face_seeds:
                data = base64.b64encode(png(seed)).decode()
                library.user_add(home, person.user_id, Image(data, ImageType.BASE64), user_info=person.user_info)
                calls += 1
            for other in others:
                library.user_copy(person.user_id, home, other)
                calls += 1
        counts = library.counts()
    return {"groups": counts.groups, "users": counts.users, "faces": counts.faces, "calls": calls,
            "missing_users": len(missing), "seconds": round(time.monotonic() - started, 2)}


# ---- in-memory inputs for the planner -----------------------------------------------------------------

def _token(n: int) -> str:
    return f"{n:032x}"


def planner_inputs(faces: int, *, faces_per_user: int = 5, users_per_group: int = 10_000,
                   changed: float = 0.02, new: float = 0.01, extra: float = 0.01,
                   user_info: bool = True) -> tuple[Desired, Live]:
    """A library of about ``faces`` faces and a manifest that differs from it a little: ``changed``
    users have one face replaced, ``new`` users do not exist yet, ``extra`` more users exist live only.
    Images are files with known face_tokens, as resolve leaves them after a warm cache."""
    users = max(1, faces // faces_per_user)
    groups: dict[int, tuple[list[DesiredUser], dict[str, LiveUser]]] = {}
    seed = 0
    for i in range(users):
        g = i // users_per_group
        desired_users, live_users = groups.setdefault(g, ([], {}))
        uid = f"u{i:07d}"
        info = f"User {i}" if user_info else None
        tokens = [_token(seed + k) for k in range(faces_per_user)]
        seed += faces_per_user
        images = tuple(DesiredImage(ImageKind.FILE, face_path(seed + k), f"/lib/faces/{seed + k}.png",
                                    face_token=t) for k, t in enumerate(tokens))
        desired_users.append(DesiredUser(uid, images, info))
        fraction = (i * 7919 % 10_000) / 10_000  # spread the kinds of change evenly, deterministically
        if fraction < new:
            continue
        live_tokens = list(tokens)
        if fraction < new + changed:
            live_tokens[-1] = _token(10**12 + i)
        live_users[uid] = LiveUser(uid, tuple(live_tokens), info)
        if fraction >= 1 - extra:
            xid = f"x{i:07d}"
            live_users[xid] = LiveUser(xid, None, None)
    desired = Desired(tuple(DesiredGroup(group_id(g), tuple(du)) for g, (du, _) in sorted(groups.items())))
    live = Live(tuple(group_id(g) for g in groups),
                {group_id(g): LiveGroup(group_id(g), lu) for g, (_, lu) in groups.items()},
                identity="bench")
    return desired, live


def nested_dicts(desired: Desired, live: Live) -> tuple[dict, dict]:
    """The same two states as ``{group: {user: {"user_info": ..., "faces": sorted tokens}}}``."""
    left = {g.group_id: {u.user_id: {"user_info": u.user_info,
                                     "faces": sorted(i.face_token for i in u.images)} for u in g.users}
            for g in desired.groups}
    right = {gid: {u.user_id: {"user_info": u.user_info, "faces": sorted(u.face_tokens or ())}
                   for u in g.users.values()} for gid, g in live.groups.items()}
    return left, right


def iter_face_tokens(spec: LibrarySpec) -> Iterator[tuple[str, str, str]]:
    """(group_id, user_id, face_token) of every face the manifest wants, for checks."""
    for person in people(spec):
        for gid in person.groups:
            for seed in person.face_seeds:
                yield gid, person.user_id, local_face_token(png(seed))


def _faces_range(text: str) -> tuple[int, int]:
    low, _, high = text.partition("-")
    return int(low), int(high or low)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.generate", description=__doc__.split("\n")[0])
    parser.add_argument("out", help="folder for faceset.yaml and faces/")
    parser.add_argument("--groups", type=int, default=3)
    parser.add_argument("--users", type=int, default=100, help="users per group")
    parser.add_argument("--faces", type=_faces_range, default=(1, 3), help="faces per user, N or MIN-MAX")
    parser.add_argument("--shared", type=float, default=0.0, help="share of users in two groups")
    parser.add_argument("--no-user-info", action="store_true")
    parser.add_argument("--db", help="also populate this LocalLibrary file")
    parser.add_argument("--out-of-sync", type=float, default=0.0, help="share of users left out of --db")
    args = parser.parse_args(argv)
    spec = LibrarySpec(args.groups, args.users, args.faces[0], args.faces[1], args.shared, not args.no_user_info)
    manifest = write_manifest(args.out, spec)
    print(f"wrote {manifest} ({face_count(people(spec))} faces)")
    if args.db:
        print(f"populated {args.db}: {populate(args.db, spec, out_of_sync=args.out_of_sync)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

