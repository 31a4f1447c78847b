"""``facesync validate MANIFEST...``: check manifests completely, with no network and no API call.

Text output: "manifest OK: ..." on stdout (warnings on stderr), or the diagnostics on stderr and exit 1;
a rule broken many times shows its first few and a count of the rest, unless ``facesync -v validate``.
JSON output: one object on stdout, ``{"valid", "summary", "diagnostics"}``, for editors and CI bots; with
several manifests, a list of such objects, each with its ``manifest``. Several manifests (as pre-commit
passes them) are all checked, and the exit is 1 when any is invalid.
Counts: groups, distinct user_ids, and faces (one per image per group membership).
``--check-faces`` also looks at every photo with the local face detector (see facesync/faces/check.py):
its findings are warnings, or errors with ``--strict``.
"""

from __future__ import annotations

import json

import click

from facesync.errors import EXIT_ERROR, EXIT_OK, ManifestError
from facesync.manifest import Diagnostic, load, render_diagnostics
from facesync.manifest.diagnostics import SHOWN_PER_KIND
from facesync.model import Desired
from facesync.words import counted


def summarize(desired: Desired) -> dict:
    users = {user.user_id for group in desired.groups for user in group.users}
    faces = sum(len(user.images) for group in desired.groups for user in group.users)
    return {"groups": len(desired.groups), "users": len(users), "faces": faces}


def _result(valid: bool, summary: dict | None, diagnostics: tuple[Diagnostic, ...]) -> dict:
    return {"valid": valid, "summary": summary, "diagnostics": json.loads(render_diagnostics(diagnostics, "json"))}


def _emit_text(valid: bool, summary: dict | None, diagnostics: tuple[Diagnostic, ...], *, every: bool) -> None:
    if diagnostics:
        click.echo(render_diagnostics(diagnostics, per_kind=None if every else SHOWN_PER_KIND), err=True)
    if valid:
        click.echo(f"manifest OK: {counted(summary['groups'], 'group')}, {counted(summary['users'], 'user')}, "
                   f"{counted(summary['faces'], 'face')}"
                   + (f" ({counted(len(diagnostics), 'warning')})" if diagnostics else ""))
    else:
        errors = sum(1 for d in diagnostics if d.is_error)
        click.echo(f"manifest invalid: {errors} error{'s' if errors != 1 else ''}", err=True)


def check(manifest: str, *, check_faces: bool = False, strict: bool = False
          ) -> tuple[bool, dict | None, tuple[Diagnostic, ...]]:
    """(valid, summary, diagnostics) of one manifest."""
    try:
        loaded = load(manifest)
    except ManifestError as problem:
        return False, None, problem.diagnostics
    if not check_faces:
        return True, summarize(loaded.desired), loaded.warnings
    from facesync.faces.check import check_desired

    found, _ = check_desired(loaded.desired, strict=strict)
    return not any(d.is_error for d in found), summarize(loaded.desired), loaded.warnings + found


@click.command("validate")
@click.argument("manifests", metavar="MANIFEST...", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for people, json for editors and CI.")
@click.option("--check-faces", is_flag=True,
              help="Also look for one large-enough face in every photo, with the local detector "
                   "(the 'faces' extra).")
@click.option("--strict", is_flag=True, help="With --check-faces: face problems are errors, not warnings.")
def command(manifests: tuple[str, ...], fmt: str, check_faces: bool, strict: bool) -> int:
    """Check MANIFEST and every file it names, without any network call.

    \b
    Examples:
      facesync validate faceset.yaml
      facesync validate faceset.yaml --format json      # for editors and CI bots
      facesync validate teams/*/faceset.yaml            # several at once (pre-commit does this)
      facesync validate faceset.yaml --check-faces --strict
    """
    context = click.get_current_context()
    every = ((context.find_root().obj or {}).get("verbosity") or 0) >= 1
    if strict and not check_faces:
        raise click.UsageError("--strict applies to --check-faces: add --check-faces")
    if check_faces:
        from facesync.faces.detector import Detector

        Detector()  # fails now, with the install command, when the detector is missing
    results = [(manifest, *check(manifest, check_faces=check_faces, strict=strict)) for manifest in manifests]
    if fmt == "json":
        documents = [{"manifest": manifest, **_result(*result)} for manifest, *result in results]
        shown = documents[0] if len(documents) == 1 else documents
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
    else:
        for manifest, *result in results:
            if len(results) > 1:
                click.echo(f"{manifest}:", err=not result[0])
            _emit_text(*result, every=every)
    return EXIT_OK if all(valid for _, valid, _, _ in results) else EXIT_ERROR
