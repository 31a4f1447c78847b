"""facesync: keep a Baidu Face V3 face library equal to a YAML manifest kept in git.

The Python API, the same work as the command line (which is built on it)::

    import facesync

    with facesync.Session("local:library.db") as session:
        plan = session.plan("faceset.yaml")      # what would change; nothing is touched
        result = session.apply(plan)             # lock, check, run, verify
        assert result.ok

``Session`` opens a target (``local:PATH``, ``baidu``, or a Baidu-compatible ``http(s)://`` URL), plans
from a manifest (or, with ``Session.offline``, from a snapshot) and applies plans. A ``Plan`` lists its
``operations`` (``Operation``, of an ``OpKind``) and its ``Safety``; ``apply`` returns an ``ApplyResult``
with one ``OpResult`` per operation. Every error is a ``FacesyncError``; the kinds below are the ones
callers branch on. Everything not in ``__all__`` is internal and may change.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

# name -> module that defines it; imported on first use, so `import facesync` (and the CLI) stays fast
_EXPORTS = {
    "Session": "facesync.session",
    "Manifest": "facesync.session",
    "SavedPlan": "facesync.session",
    "load_manifest": "facesync.session",
    "load_plan_file": "facesync.session",
    "Plan": "facesync.plan.ops",
    "Operation": "facesync.plan.ops",
    "OpKind": "facesync.plan.ops",
    "Safety": "facesync.plan.ops",
    "ApplyResult": "facesync.apply.results",
    "OpResult": "facesync.apply.results",
    "FacesyncError": "facesync.errors",
    "ConfigError": "facesync.errors",
    "ManifestError": "facesync.errors",
    "PlanRefusedError": "facesync.errors",
    "PlanStaleError": "facesync.errors",
    "UnmatchedFacesError": "facesync.errors",
    "LockHeldError": "facesync.errors",
    "FaceApiError": "facesync.api.errors",
}

__all__ = [
    "ApplyResult", "ConfigError", "FaceApiError", "FacesyncError", "LockHeldError", "Manifest", "ManifestError",
    "OpKind", "OpResult", "Operation", "Plan", "PlanRefusedError", "PlanStaleError", "Safety", "SavedPlan",
    "Session", "UnmatchedFacesError", "__version__", "load_manifest", "load_plan_file",
]

if TYPE_CHECKING:
    from facesync.api.errors import FaceApiError
    from facesync.apply.results import ApplyResult, OpResult
    from facesync.errors import (
        ConfigError,
        FacesyncError,
        LockHeldError,
        ManifestError,
        PlanRefusedError,
        PlanStaleError,
        UnmatchedFacesError,
    )
    from facesync.plan.ops import Operation, OpKind, Plan, Safety
    from facesync.session import Manifest, SavedPlan, Session, load_manifest, load_plan_file


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'facesync' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
