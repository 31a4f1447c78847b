"""``facesync validate MANIFEST``: check a manifest completely, with no network and no API call.

Text output: "manifest OK: ..." on stdout (warnings on stderr), or every diagnostic on stderr and exit 1.
JSON output: one object on stdout, ``{"valid", "summary", "diagnostics"}``, for editors and CI bots.
Counts: groups, distinct user_ids, and faces (one per image per group membership).
"""

from __future__ import annotations

import json

import click

from facesync.errors import EXIT_ERROR, EXIT_OK, ManifestError
from facesync.manifest import Diagnostic, load, render_diagnostics
from facesync.model import Desired


def summarize(desired: Desired) -> dict:
    users = {user.user_id for group in desired.groups for user in group.users}
    faces = sum(len(user.images) for group in desired.groups for user in group.users)
    return {"groups": len(desired.groups), "users": len(users), "faces": faces}


def _emit(fmt: str, valid: bool, summary: dict | None, diagnostics: tuple[Diagnostic, ...]) -> None:
    if fmt == "json":
        click.echo(json.dumps({"valid": valid, "summary": summary,
                               "diagnostics": json.loads(render_diagnostics(diagnostics, "json"))},
                              indent=2, ensure_ascii=False))
        return
    if diagnostics:
        click.echo(render_diagnostics(diagnostics), err=True)
    if valid:
        click.echo(f"manifest OK: {summary['groups']} groups, {summary['users']} users, {summary['faces']} faces"
                   + (f" ({len(diagnostics)} warnings)" if diagnostics else ""))
    else:
        errors = sum(1 for d in diagnostics if d.is_error)
        click.echo(f"manifest invalid: {errors} error{'s' if errors != 1 else ''}", err=True)


@click.command("validate")
@click.argument("manifest", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for people, json for editors and CI.")
def command(manifest: str, fmt: str) -> int:
    """Check MANIFEST and every file it names, without any network call."""
    try:
        loaded = load(manifest)
    except ManifestError as problem:
        _emit(fmt, False, None, problem.diagnostics)
        return EXIT_ERROR
    _emit(fmt, True, summarize(loaded.desired), loaded.warnings)
    return EXIT_OK
