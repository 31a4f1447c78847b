"""``facesync export``: write a manifest of what the library holds (see facesync/export.py for the format).

Without ``--out`` (or with ``--out -``, as in most command-line tools) the manifest streams to stdout;
into a file it is written atomically (a temporary file in the same folder, then a rename), so an
interrupted export never leaves a partial manifest.
A ``local:PATH`` target that does not exist is refused rather than created empty.
``--user GROUP/USER`` (or ``--fragment``) writes a fragment for ``include:`` instead of a whole manifest.
"""

from __future__ import annotations

import logging
import sys

import click

from facesync.commands.options import concurrency_option, qps_option, target_option
from facesync.errors import EXIT_OK
from facesync.files import atomic_output
from facesync.session import Session
from facesync.words import counted

log = logging.getLogger(__name__)


@click.command("export")
@target_option
@click.option("--group", "-g", "groups", metavar="G", multiple=True,
              help="Export only this group (repeatable). Default: every group.")
@click.option("--user", "-u", "users", metavar="GROUP/USER", multiple=True,
              help="Export only this user of that group, as a fragment for include: (repeatable).")
@click.option("--fragment", is_flag=True,
              help="Write a fragment for a manifest's include: (no version:, no target:); implied by --user.")
@click.option("--out", "-o", "out", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="Write the manifest to FILE (atomically) instead of stdout; - means stdout.")
@qps_option
@concurrency_option
def command(target: str | None, groups: tuple[str, ...], users: tuple[str, ...], fragment: bool,
            out: str | None, qps: float | None, concurrency: int) -> int:
    """Write a manifest of the library as it is: groups, users, user_info, faces by face_token.

    Planning the exported manifest against the same library shows no changes.

    \b
    Examples:
      facesync export --target baidu --out faceset.yaml
      facesync export --target baidu --group staff --group visitors -o faceset.yaml
      facesync plan faceset.yaml                       # No changes.
      facesync export --user staff/alice --user staff/bob -o adopted.yaml   # then include: [adopted.yaml]
    """
    if out == "-":
        out = None
    with Session(target, qps=qps, concurrency=concurrency, if_missing="error") as session:
        if out:
            with atomic_output(out, what="manifest") as handle:
                stats = session.export(handle, groups=groups, users=users, fragment=fragment)
        else:
            stats = session.export(sys.stdout, groups=groups, users=users, fragment=fragment)
            sys.stdout.flush()
    where = f" to {out}" if out else ""
    click.echo(f"Exported {counted(stats.groups, 'group')}, {counted(stats.users, 'user')}, "
               f"{counted(stats.faces, 'face')}{where}.", err=True)
    return EXIT_OK
