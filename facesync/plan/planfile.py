"""The JSON form of a Plan: what ``plan --out`` writes, ``apply PLAN.json`` runs and ``show`` renders.

The document follows ``schemas/plan.schema.json`` (``format_version`` 2). ``checksum`` is
``sha256:<hex>`` over the canonical JSON (sorted keys, no spaces, UTF-8) of every other field, as
octoDNS's ``--checksum``: it detects a plan changed after it was written (a bad merge, a hand edit, a
truncated copy), not who wrote it, since anyone can compute it again. What ``apply`` can recompute it
does not take from the file (see ``commands/apply.py`` and ``plan/trust.py``).

A plan file is portable: an image is saved as its path relative to the manifest's folder (``source``)
with the sha256 of the bytes that were planned, and ``manifest`` says where that folder is, relative to
the checkout (or folder) the plan was made in; the only absolute path saved is that checkout's
(``planned_in``), used only when it still holds the very manifest the plan was made from. A ``local:``
target inside that folder is saved relative to it too, and ``apply`` opens it in the folder whose images
it uses (a copy of a checkout applies to the copy's library). Everything
the views show is saved too (notes, the manifest and commit, the names of removed faces), so ``show``
renders a saved plan exactly as ``plan`` did. Fields derived from others (``summary``, ``calls``, each
operation's ``index``, ``endpoint`` and ``key``) are there for readers and tools; loading rebuilds the
Plan from the primary fields, so ``dump_plan(load_plan(dump_plan(p))) == dump_plan(p)``.

Loading refuses, with ``PlanFileError``, anything that is not a valid plan of this format (format 1
files, which saved absolute paths and no image hashes, included), and with ``PlanStaleError`` a plan
whose checksum does not match. Whether the library still matches the plan's ``expects`` is the
executor's check, not this module's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from facesync import __version__
from facesync.errors import FacesyncError, PlanStaleError
from facesync.files import write_atomically
from facesync.model import ImageKind
from facesync.plan.ops import Expect, FaceSource, Operation, OpKind, Plan, Safety

FORMAT_VERSION = 2
# JSON Schema validation costs about 0.3 ms an operation: beyond this many, the schema checks the header
# and the first operations; the checksum proves the rest was written by facesync, and rebuilding the
# operations still refuses a malformed one.
SCHEMA_CHECKED_OPERATIONS = 10_000


class PlanFileError(FacesyncError):
    """A plan file cannot be read: not JSON, not a facesync plan, or from a newer format."""


def canonical(document: dict) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def checksum(document: dict) -> str:
    """The checksum of a plan document (its ``checksum`` field, if any, left out)."""
    body = {key: value for key, value in document.items() if key != "checksum"}
    return "sha256:" + hashlib.sha256(canonical(body)).hexdigest()


def _face(face: FaceSource | None) -> dict | None:
    if face is None:
        return None
    return {"kind": face.kind.value, "source": face.source, "face_token": face.face_token,
            "sha256": face.sha256}


def _expect(expect: Expect) -> dict:
    return {
        "group_id": expect.group_id,
        "user_id": expect.user_id,
        "exists": expect.exists,
        "face_tokens": list(expect.face_tokens) if expect.face_tokens is not None else None,
        "user_info": expect.user_info,
    }


def _operation(index: int, op: Operation) -> dict:
    return {
        "index": index,
        "kind": op.kind.value,
        "endpoint": op.kind.endpoint,
        "key": op.key,
        "group_id": op.group_id,
        "user_id": op.user_id,
        "face": _face(op.face),
        "face_token": op.face_token,
        "user_info": op.user_info,
        "src_group_id": op.src_group_id,
        "quality_control": op.quality_control,
        "liveness_control": op.liveness_control,
        "after": list(op.after),
        "expects": [_expect(expect) for expect in op.expects],
        "reason": op.reason,
    }


def portable_target(target: str, planned_in: str) -> str:
    """A local library inside the folder the plan was made in is saved relative to it, as the manifest
    is, so that applying in a copy of that folder changes the copy's library (next to the images it
    uploads), not the original's; any other target is saved as it is."""
    path = target[len("local:"):] if target.startswith("local:") else ""
    if not path or not os.path.isabs(path) or not planned_in:
        return target
    real, root = os.path.realpath(path), os.path.realpath(planned_in)
    if os.path.commonpath([real, root]) != root or real == root:
        return target
    return "local:" + os.path.relpath(real, root).replace(os.sep, "/")


def local_target_in(target: str, planned_in: str, root: str) -> tuple[str, str] | None:
    """A saved plan's local library inside the folder it was made in, as the library under ``root``,
    with the plan's relative name for it (None: any other target, which is used as it is)."""
    relative = portable_target(target, planned_in)
    path = relative[len("local:"):] if relative.startswith("local:") else ""
    if not path or os.path.isabs(path):
        return None
    return "local:" + os.path.abspath(os.path.join(root, *path.split("/"))), relative


def _target_where_planned(target: str, planned_in: str) -> str:
    """The loaded plan names the library it was made for, as ``plan`` printed it (``show`` renders it)."""
    path = target[len("local:"):] if target.startswith("local:") else ""
    if not path or os.path.isabs(path) or not os.path.isabs(planned_in):
        return target
    return "local:" + os.path.join(planned_in, *path.split("/"))


def to_document(plan: Plan) -> dict:
    """The plan as a JSON-ready dict, checksum included."""
    from facesync.plan.render import summarize  # the summary counts are the human view's

    summary = summarize(plan)
    safety = plan.safety
    document = {
        "format_version": FORMAT_VERSION,
        "facesync_version": __version__,
        "target": portable_target(plan.target, plan.planned_in),
        "manifest_digest": plan.manifest_digest,
        "live_source": plan.live_source,
        "created_at": plan.created_at,
        "qps": plan.qps,
        "summary": {
            "add": summary.add,
            "change": summary.change,
            "destroy": summary.destroy,
            "calls": summary.calls,
            "estimated_seconds": summary.seconds,
        },
        "safety": {
            "unsafe": safety.unsafe,
            "existing": safety.existing,
            "deleting": safety.deleting,
            "max_share": safety.max_share,
            "threshold_min": safety.threshold_min,
            "reasons": list(safety.reasons),
            "forced": safety.forced,
        },
        "manifest": plan.manifest,
        "planned_in": plan.planned_in,
        "commit": plan.commit or None,
        "notes": list(plan.notes),
        "protected_groups": list(plan.protected_groups),
        "face_names": dict(sorted(plan.face_names.items())),
        **({"refresh": dict(plan.refresh)} if plan.refresh is not None else {}),
        **({"replaced_by_detect": {
            "users": [{"group_id": group_id, "user_id": user_id} for group_id, user_id in plan.replaced_by_detect],
            "reupload": plan.reupload,
        }} if plan.replaced_by_detect else {}),
        "operations": [_operation(index, op) for index, op in enumerate(plan.operations)],
    }
    document["checksum"] = checksum(document)
    return document


def dump_plan(plan: Plan) -> str:
    """The plan file's text: indented JSON with one operation a line (readable, diffable, and fast for a
    million operations), stable key order, ending with a newline."""
    document = to_document(plan)
    operations = document.pop("operations")
    checksum_value = document.pop("checksum")
    head = json.dumps(document, indent=2, ensure_ascii=False)[:-2]  # without the closing "\n}"
    lines = [json.dumps(op, ensure_ascii=False, separators=(", ", ": ")) for op in operations]
    ops = "[]" if not lines else "[\n    " + ",\n    ".join(lines) + "\n  ]"
    return f'{head},\n  "operations": {ops},\n  "checksum": {json.dumps(checksum_value)}\n}}\n'


def write_plan(plan: Plan, path: str | os.PathLike) -> None:
    """The plan file at ``path``, written atomically: never a partial plan for apply to read."""
    write_atomically(path, dump_plan(plan), what="plan file")


def load_plan(path_or_text: str | os.PathLike) -> Plan:
    """A Plan from a plan file (path) or its text; checked against the schema and its checksum."""
    text, name = _read(path_or_text)
    try:
        document = json.loads(text)
    except ValueError as error:
        raise PlanFileError(f"{name} is not JSON: {error}",
                            hint="pass a file written by `facesync plan --out`") from None
    if not isinstance(document, dict) or "format_version" not in document:
        raise PlanFileError(f"{name} is not a facesync plan", hint="pass a file written by `facesync plan --out`")
    version = document["format_version"]
    if version != FORMAT_VERSION:
        why = (" (format 1 saved absolute image paths and no image hashes, so it could not be checked)"
               if version == 1 else "")
        raise PlanFileError(f"{name} has plan format {version!r}; this facesync reads format "
                            f"{FORMAT_VERSION}{why}",
                            hint="make the plan again with this version of facesync (facesync plan --out) "
                                 "and review it")
    operations = document.get("operations")
    if isinstance(operations, list) and len(operations) > SCHEMA_CHECKED_OPERATIONS:
        _validate({**document, "operations": operations[:SCHEMA_CHECKED_OPERATIONS]}, name)
    else:
        _validate(document, name)
    if checksum(document) != document["checksum"]:
        raise PlanStaleError(f"{name} was changed after it was written: its checksum does not match",
                             hint="make a new plan with `facesync plan --out` and review it again")
    for index, op in enumerate(document["operations"]):
        if op["index"] != index or any(dep >= index for dep in op["after"]):
            raise PlanFileError(f"{name}: operation {index} is out of order",
                                hint="make a new plan with `facesync plan --out`")
    try:
        return from_document(document)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise PlanFileError(f"{name} is not a valid facesync plan: {type(error).__name__}: {error}",
                            hint="pass a file written by `facesync plan --out`") from None


def _read(path_or_text: str | os.PathLike) -> tuple[str, str]:
    if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
        return path_or_text, "the plan"
    try:
        return Path(path_or_text).read_text(encoding="utf-8"), str(path_or_text)
    except (OSError, UnicodeDecodeError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise PlanFileError(f"cannot read plan file {path_or_text}: {reason}") from None


def _validate(document: dict, name: str) -> None:
    import jsonschema

    from facesync import schemas

    validator = jsonschema.Draft202012Validator(schemas.load("plan"))
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise PlanFileError(f"{name} is not a valid facesync plan: at {where}: {error.message}",
                            hint="pass a file written by `facesync plan --out`")


def from_document(document: dict) -> Plan:
    safety = document["safety"]
    return Plan(
        operations=tuple(_load_operation(op) for op in document["operations"]),
        target=_target_where_planned(document["target"], document["planned_in"]),
        manifest_digest=document["manifest_digest"],
        safety=Safety(existing=safety["existing"], deleting=safety["deleting"], max_share=safety["max_share"],
                      threshold_min=safety["threshold_min"], reasons=tuple(safety["reasons"]),
                      forced=safety["forced"]),
        live_source=document["live_source"],
        created_at=document["created_at"],
        notes=tuple(document["notes"]),
        qps=document["qps"],
        protected_groups=tuple(document["protected_groups"]),
        manifest=document["manifest"],
        planned_in=document["planned_in"],
        commit=document["commit"] or "",
        face_names=dict(document["face_names"]),
        refresh=document.get("refresh"),
        replaced_by_detect=tuple((user["group_id"], user["user_id"])
                                 for user in document.get("replaced_by_detect", {}).get("users", ())),
        reupload=document.get("replaced_by_detect", {}).get("reupload", False),
    )


def _load_operation(op: dict) -> Operation:
    face = op["face"]
    return Operation(
        kind=OpKind(op["kind"]),
        group_id=op["group_id"],
        user_id=op["user_id"],
        face=FaceSource(ImageKind(face["kind"]), face["source"], None, face["face_token"], face["sha256"])
        if face is not None else None,
        face_token=op["face_token"],
        user_info=op["user_info"],
        src_group_id=op["src_group_id"],
        quality_control=op["quality_control"],
        liveness_control=op["liveness_control"],
        after=tuple(op["after"]),
        expects=tuple(
            Expect(e["group_id"], e["user_id"], e["exists"],
                   tuple(e["face_tokens"]) if e["face_tokens"] is not None else None, e["user_info"])
            for e in op["expects"]
        ),
        reason=op["reason"],
    )
