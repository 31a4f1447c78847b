"""``facesync show PLAN.json``: a saved plan, rendered offline exactly as ``facesync plan`` printed it.

A pipeline saves one JSON plan as its artifact and comments from it (``--format markdown``), or shows it
again before an apply. Everything the views need is in the file, so the output is byte for byte what
``plan`` printed for the same format; the file's checksum and format are checked, nothing else is read
(no library, no network, no image).
"""

from __future__ import annotations

import click

from facesync.commands.options import format_option, no_color_option, use_color
from facesync.errors import EXIT_OK
from facesync.plan.planfile import load_plan
from facesync.plan.render import render


@click.command("show")
@click.argument("plan_path", metavar="PLAN.json", type=click.Path(dir_okay=False))
@format_option
@no_color_option
def command(plan_path: str, fmt: str, no_color: bool) -> int:
    """Print a saved plan as `facesync plan` did: text, json or markdown. Offline.

    \b
    Examples:
      facesync show plan.json
      facesync show plan.json --format markdown > comment.md
    """
    text = render(load_plan(plan_path), fmt, color=use_color(no_color))
    click.echo(text, nl=not text.endswith("\n"))
    return EXIT_OK
