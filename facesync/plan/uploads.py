"""The image files a plan uploads: pinned when the plan is made, found and checked when it is applied.

A reviewer approves photos, not paths: every upload of a file carries the sha256 of the bytes that were
planned (``pin``). ``apply PLAN.json`` finds each file again under the manifest's folder in the
checkout it runs in, and refuses, before its first write, when any is missing, differs from what was
planned, or is not inside that folder (an absolute path, a ``..`` step, a symlink that leads out), naming
every one (``bind``). The executor checks the bytes once more as it uploads them.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, replace

from facesync.api.protocol import Image
from facesync.checkout import PLANNED_IN, Root
from facesync.errors import FacesyncError
from facesync.model import ImageKind
from facesync.plan.ops import FaceSource, Plan

MAX_SHOWN = 20


class PlanImagesError(FacesyncError):
    """A saved plan's image files cannot be used: missing, changed since the plan, or outside its folder."""


def load_upload(face: FaceSource) -> tuple[Image, str | None]:
    """What an add or update sends for ``face``, and for a file the sha256 of the bytes read. A file whose
    bytes are not the planned ones is refused (``PlanImagesError``): never upload what was not reviewed."""
    if face.kind is ImageKind.URL:
        return Image.from_url(face.source), None
    if face.kind is not ImageKind.FILE:
        return Image.from_face_token(face.face_token or face.source), None
    with open(face.path or face.source, "rb") as handle:
        data = handle.read()
    digest = hashlib.sha256(data).hexdigest()
    if face.sha256 is not None and digest != face.sha256:
        raise PlanImagesError(f"{face.source} changed after the plan was made (sha256 {digest[:12]}..., "
                              f"planned {face.sha256[:12]}...); make a new plan")
    return Image.from_bytes(data), digest


def pin(plan: Plan, sha256_of: Callable[[str], str]) -> Plan:
    """``plan`` with the content sha256 of every uploaded file (``sha256_of(absolute path)``)."""
    known: dict[str, str] = {}
    operations = []
    for op in plan.operations:
        face = op.face
        if face is not None and face.kind is ImageKind.FILE and face.sha256 is None:
            where = face.path or face.source
            if where not in known:
                try:
                    known[where] = sha256_of(where)
                except OSError as error:  # gone or unreadable since the manifest was checked
                    raise PlanImagesError(f"cannot read {_shown(face.source)}: {error.strerror or error}",
                                          hint="check the file and plan again") from None
            op = replace(op, face=replace(face, sha256=known[where]))
        operations.append(op)
    return replace(plan, operations=tuple(operations))


def _plain_relative(path: str) -> bool:
    """A relative path with forward slashes and no ``..``, ``.`` or empty part."""
    if not path or "\0" in path or "\\" in path or path.startswith("/"):
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class Checkout:
    """Where a saved plan's files are: the root, the manifest's folder in it, and the manifest file
    there ("" when there is none)."""

    root: Root
    base: str
    manifest: str


def find_checkout(plan: Plan, roots: list[Root], digest_of: Callable[[str], str]) -> Checkout:
    """The first of ``roots`` that holds the plan's manifest, else the first root (with no manifest).
    A root named by the plan file itself counts only when ``digest_of`` its manifest is the plan's."""
    for root in roots:
        path = os.path.join(root.path, *plan.manifest.split("/")) if plan.manifest else ""
        if not path or not os.path.isfile(path):
            continue
        base = base_folder(plan, root)
        if root.kind == PLANNED_IN:
            try:
                if digest_of(path) != plan.manifest_digest:
                    continue
            except FacesyncError:
                continue
        return Checkout(root, base, path)
    return Checkout(roots[0], base_folder(plan, roots[0]), "")


def base_folder(plan: Plan, root: Root) -> str:
    """The manifest's folder under ``root``: where the plan's image paths start."""
    if plan.manifest and not _plain_relative(plan.manifest):
        raise PlanImagesError(f"the plan names its manifest as {plan.manifest!r}, not a plain relative path",
                              hint="make the plan again with facesync plan --out")
    folder = os.path.realpath(os.path.join(root.path, *posixpath.dirname(plan.manifest).split("/")))
    if not _inside(folder, os.path.realpath(root.path)):
        raise PlanImagesError(f"the manifest's folder {plan.manifest!r} leads outside {root.describe()}",
                              hint="apply from a checkout where it is a plain folder")
    return folder


def bind(plan: Plan, base: str, sha256_of: Callable[[str], str]) -> Plan:
    """``plan`` with every uploaded file found under ``base`` and checked against its pinned sha256;
    ``PlanImagesError`` lists every file that is missing, different or outside ``base``."""
    checked: dict[str, str | None] = {}  # source -> real path, or None when refused
    problems: list[str] = []
    for op in plan.operations:
        face = op.face
        if face is None or face.kind is not ImageKind.FILE or face.source in checked:
            continue
        real, problem = _check(face, base, sha256_of)
        checked[face.source] = real
        if problem:
            problems.append(f"{_shown(face.source)}: {problem}")
    if problems:
        listing = "\n".join(f"  - {line}" for line in problems[:MAX_SHOWN])
        more = f"\n  ... and {len(problems) - MAX_SHOWN} more" if len(problems) > MAX_SHOWN else ""
        noun = "image" if len(problems) == 1 else "images"
        raise PlanImagesError(
            f"refusing to apply: {len(problems)} {noun} of the plan cannot be uploaded as reviewed "
            f"(paths are relative to {base}):\n{listing}{more}",
            hint="apply in a checkout of the commit the plan was made from (--chdir DIR to name it), or "
                 "make and review a new plan")
    operations = tuple(
        replace(op, face=replace(op.face, path=checked[op.face.source]))
        if op.face is not None and op.face.kind is ImageKind.FILE else op
        for op in plan.operations)
    return replace(plan, operations=operations)


def _check(face: FaceSource, base: str, sha256_of: Callable[[str], str]) -> tuple[str | None, str | None]:
    if not _plain_relative(face.source):
        return None, "not a path inside the manifest's folder"
    if face.sha256 is None:
        return None, "the plan does not pin its content (no sha256)"
    real = os.path.realpath(os.path.join(base, *face.source.split("/")))
    if not _inside(real, base):
        return None, f"leads outside the manifest's folder (to {real})"
    try:
        digest = sha256_of(real)
    except FileNotFoundError:
        return None, "missing"
    except OSError as error:
        return None, f"cannot be read: {error.strerror or error}"
    if digest != face.sha256:
        return None, (f"differs from the reviewed image (sha256 {digest[:12]}... now, "
                      f"{face.sha256[:12]}... planned)")
    return real, None


def _shown(source: str) -> str:
    return source.encode("unicode_escape").decode("ascii") if not source.isprintable() else source
