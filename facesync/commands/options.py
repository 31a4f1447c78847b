"""Options that several commands share, defined once so that they read the same everywhere."""

from __future__ import annotations

import os
import sys

import click

target_option = click.option(
    "--target", "-t", "target", metavar="T", default=None,
    help="local:PATH, baidu, or http(s)://host:port. Default: $FACESYNC_TARGET, the manifest's "
         "target:, then local:.facesync/library.db.",
)
qps_option = click.option(
    "--qps", type=click.FloatRange(min=0, min_open=True), default=None, metavar="N",
    help="Most API calls per second (default 10 for remote targets, no limit for local).",
)
concurrency_option = click.option(
    "--concurrency", type=click.IntRange(min=1, max=64), default=8, show_default=True, metavar="N",
    help="Calls in flight at once.",
)
format_option = click.option(
    "--format", "fmt", type=click.Choice(["text", "json", "markdown"]), default="text", show_default=True,
    help="text for people, json for machines, markdown for pull-request comments.",
)
no_color_option = click.option(
    "--no-color", is_flag=True, help="No colour even on a terminal (NO_COLOR does the same).",
)


reupload_option = click.option(
    "--reupload", is_flag=True,
    help="On a service whose detect gives other face_tokens than it stores: replace the faces facesync cannot "
         "match by deleting them and re-adding the manifest's images.",
)


def refresh_options(command):
    """``--refresh``, ``--state`` and ``--audit``: how the library is read (see facesync/incremental.py)."""
    command = click.option(
        "--audit", type=click.IntRange(min=0), default=None, metavar="N",
        help="Incremental: also read again the N users verified least recently (default: 1% of the "
             "users, at least 1).")(command)
    command = click.option(
        "--state", "state_file", metavar="FILE", type=click.Path(dir_okay=False), default=None,
        help="The state of the library to trust and update (default: one file per library in the cache "
             "folder).")(command)
    return click.option(
        "--refresh", type=click.Choice(["full", "incremental"]), default=None,
        help="full: read every managed user; incremental: the group listings, then only the users that "
             "may have moved since the state. Default: the manifest's policy.refresh, else full.")(command)


def group_option(verb: str):
    return click.option("--group", "-g", "groups", metavar="G", multiple=True,
                        help=f"{verb} only this group of the manifest (repeatable).")


def user_option(verb: str):
    return click.option("--user", "-u", "users", metavar="U", multiple=True,
                        help=f"{verb} only this user of the manifest (repeatable); other users are left alone.")


def use_color(no_color: bool) -> bool:
    """Colour only for a person: stdout is a terminal and NO_COLOR (https://no-color.org) is unset."""
    return not no_color and not os.environ.get("NO_COLOR") and sys.stdout.isatty()
