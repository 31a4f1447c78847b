"""Bounded manifests: YAML aliases ("billion laughs") and size cannot make validate or plan run long or
use much memory; each is refused with the limit it breaks, where it breaks it. Through the command line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facesync.manifest import load
from tests.support.images import png

# Nine levels of nine: 9**9 (387 million) strings from a few hundred bytes. Each level is an anchor
# inside one flow list, so the whole bomb is one value that can sit under any key.
LAUGHS = "[" + ", ".join(
    ["&l1 [" + ", ".join(["lol"] * 9) + "]"]
    + [f"&l{level} [" + ", ".join([f"*l{level - 1}"] * 9) + "]" for level in range(2, 10)]) + "]"
# The same with mappings, which merge keys (<<) could also multiply.
MAP_LAUGHS = "[" + ", ".join(
    ["&m1 {" + ", ".join(f"k{n}: lol" for n in range(9)) + "}"]
    + [f"&m{level} {{" + ", ".join(f"k{n}: *m{level - 1}" for n in range(9)) + "}" for level in range(2, 10)]) + "]"

USER = "images: [a.png]"
BOMBS = {
    "images": f"groups:\n  g:\n    users:\n      u:\n        images: {LAUGHS}\n",
    "user_info": f"groups:\n  g:\n    users:\n      u:\n        {USER}\n        user_info: {LAUGHS}\n",
    "include": f"include: {LAUGHS}\ngroups: {{}}\n",
    "people.groups": f"groups:\n  g: {{}}\npeople:\n  u:\n    {USER}\n    groups: {LAUGHS}\n",
    "defaults": f"defaults: {MAP_LAUGHS}\ngroups: {{}}\n",
    "policy": f"policy:\n  protected_groups: {LAUGHS}\ngroups: {{}}\n",
    "sources": f"groups:\n  g:\n    sources: {LAUGHS}\n",
    "merge key": f"anchors: {MAP_LAUGHS}\ngroups:\n  g:\n    users:\n      u:\n        <<: *m9\n        {USER}\n",
}

# Runs the command line and reports the process's own peak memory (KiB) on its last line of stderr:
# VmHWM, which starts afresh at exec (ru_maxrss would carry the forking test process's peak).
MEASURED = ("import re, sys\nfrom facesync.cli import main\ncode = 0\ntry:\n    main(sys.argv[1:])\n"
            "except SystemExit as done:\n    code = done.code\n"
            "peak = re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1)\n"
            "print('peak-rss-kib', peak, file=sys.stderr)\nsys.exit(code)\n")


def run(*args: str, cwd: Path) -> tuple[int, str, int]:
    env = {**os.environ, "FACESYNC_CACHE_DIR": str(cwd / "cache")}
    env.pop("FACESYNC_TARGET", None)
    done = subprocess.run([sys.executable, "-c", MEASURED, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL, check=False)
    *lines, last = done.stderr.rstrip("\n").split("\n")
    assert last.startswith("peak-rss-kib "), done.stderr
    return done.returncode, "\n".join(lines) + done.stdout, int(last.split()[1])


def manifest(folder: Path, body: str) -> Path:
    (folder / "a.png").write_bytes(png(1))
    path = folder / "faceset.yaml"
    path.write_text("version: 1\n" + body)
    return path


@pytest.mark.parametrize("key", list(BOMBS))
def test_an_alias_bomb_under_any_key_is_refused_at_once_naming_the_limit(tmp_path, key):
    path = manifest(tmp_path, BOMBS[key])
    assert path.stat().st_size < 1200
    line = next(number for number, text in enumerate(path.read_text().splitlines(), 1) if "*" in text)
    for command in (["validate", str(path)], ["plan", str(path)]):
        code, output, peak_kib = run(*command, cwd=tmp_path)
        assert code == 1, output
        assert "Traceback" not in output
        found = re.search(r"faceset\.yaml:(\d+):\d+: error: YAML aliases expand faceset\.yaml to more than "
                          r"([\d,]+) values", output)
        assert found, output
        assert int(found.group(1)) == line
        assert int(found.group(2).replace(",", "")) < 10**6  # the budget of a file this small
        assert "hint:" in output
        assert peak_kib < 100 * 1024, f"{command[0]} peaked at {peak_kib} KiB"
    assert not (tmp_path / ".facesync").exists()


def test_sixty_kilobytes_of_group_aliases_do_not_become_a_million_faces(tmp_path):
    names = [f"g{n:03d}" for n in range(1000)]
    lines = ["groups:"] + [f"  {name}: {{}}" for name in names]
    lines += ["people:", "  u0: {groups: &all [" + ", ".join(names) + f"], {USER}}}"]
    lines += [f"  u{n}: {{groups: *all, {USER}}}" for n in range(1, 1000)]
    path = manifest(tmp_path, "\n".join(lines) + "\n")
    assert path.stat().st_size < 61_000
    code, output, _ = run("validate", str(path), cwd=tmp_path)
    assert code == 1
    assert "YAML aliases expand faceset.yaml to more than" in output and "manifest OK" not in output


def test_aliases_for_small_shared_parts_stay_well_inside_the_limit(tmp_path):
    """Thousands of people sharing one group list and one image list through aliases: what people write."""
    lines = ["groups:", "  staff: {}", "  visitors: {}", "people:",
             "  p0: {groups: &both [staff, visitors], images: &faces [a.png]}"]
    lines += [f"  user{n}: {{groups: *both, images: *faces}}" for n in range(5000)]
    loaded = load(str(manifest(tmp_path, "\n".join(lines) + "\n")))
    assert sum(len(group.users) for group in loaded.desired.groups) == 2 * 5001


def test_a_manifest_past_the_size_limit_is_refused_unparsed(tmp_path):
    path = manifest(tmp_path, "include: [huge.yaml]\ngroups:\n  g:\n    users:\n      u: {images: [a.png]}\n")
    with open(tmp_path / "huge.yaml", "w") as out:  # 64 MiB of comments and a little more
        line = "# " + "x" * 1021 + "\n"
        out.write(line * (64 * 1024) + "people: {}\n")
    code, output, _ = run("validate", str(path), cwd=tmp_path)
    assert code == 1
    huge = tmp_path / "huge.yaml"
    assert f"{huge}:1:1: error: {huge} takes the manifest's YAML past 64 MiB, the limit for all its " \
           "files together" in output
    assert output.splitlines()[-1] == "manifest invalid: 1 error"
