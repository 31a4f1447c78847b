"""The broken-manifest corpus: each case in tests/manifests/ must produce exactly the listed diagnostics.

Images are made at test time (none are committed): faces/alice.png, bob.png, carol.png (valid PNGs),
faces/anim.gif, faces/notes.png (text), faces/big.png (over the 2 MB base64 limit, only for the case
that names it) and faces/escape.png (a symlink to a file outside the case's folder).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from facesync.errors import ManifestError
from facesync.manifest import load
from tests.support.images import GIF, png

CORPUS = Path(__file__).parent / "manifests"
EXPECTED = yaml.safe_load((CORPUS / "expected.yaml").read_text("utf-8"))


def make_case(name: str, tmp_path: Path) -> Path:
    """A copy of case ``name`` with the images it may name, laid out under ``tmp_path``."""
    case = tmp_path / "case"
    shutil.copytree(CORPUS / name, case)
    faces = case / "faces"
    faces.mkdir(exist_ok=True)
    for seed, person in enumerate(("alice", "bob", "carol"), start=1):
        (faces / f"{person}.png").write_bytes(png(seed))
    (faces / "anim.gif").write_bytes(GIF)
    (faces / "notes.png").write_text("these are meeting notes, not a photo\n")
    if "big.png" in (case / "faceset.yaml").read_text("utf-8"):
        (faces / "big.png").write_bytes(png(9) + b"\0" * 1_600_000)
    (tmp_path / "outside.png").write_bytes(png(10))
    os.symlink(tmp_path / "outside.png", faces / "escape.png")
    return case


def diagnostics_of(case: Path, monkeypatch) -> list[str]:
    monkeypatch.chdir(case)
    with pytest.raises(ManifestError) as raised:
        load("faceset.yaml")
    return [str(d).splitlines()[0] for d in raised.value.diagnostics]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_manifest_reports_exactly(name, tmp_path, monkeypatch):
    assert diagnostics_of(make_case(name, tmp_path), monkeypatch) == EXPECTED[name]


def test_every_case_has_expectations():
    assert sorted(p.name for p in CORPUS.iterdir() if p.is_dir()) == sorted(EXPECTED)
