"""``facesync validate-changed FILE...``: validate each manifest that the changed FILEs can affect.

This is the pre-commit hook's entry: pre-commit passes every staged file, and this command validates
the manifests whose folder holds one of them (see ``facesync/affected.py``), so editing an included
fragment or a photo is checked as well as editing the manifest itself. The validation is
``facesync validate``'s, with its output and exit codes.
"""

from __future__ import annotations

import click

from facesync.affected import manifests_to_check
from facesync.commands import validate
from facesync.errors import EXIT_OK


@click.command("validate-changed")
@click.argument("changed", metavar="[FILE]...", nargs=-1, type=click.Path())
@click.option("--manifest", "-m", "manifests", metavar="MANIFEST", multiple=True, type=click.Path(dir_okay=False),
              help="A manifest to consider (repeatable). Default: every tracked faceset*.yaml / faceset*.yml.")
@click.pass_context
def command(ctx: click.Context, changed: tuple[str, ...], manifests: tuple[str, ...]) -> int:
    """Validate every manifest that a change to FILE... can affect (the pre-commit hook).

    A manifest is affected when a changed file lies in its folder, where everything it reads must be.

    \b
    Examples:
      facesync validate-changed faces/alice.png teams/sales.yaml
      facesync validate-changed --manifest prod/faceset.yaml $(git diff --name-only main)
    """
    chosen = manifests_to_check(manifests, changed)
    if not chosen:
        return EXIT_OK
    return ctx.invoke(validate.command, manifests=tuple(chosen), fmt="text")
