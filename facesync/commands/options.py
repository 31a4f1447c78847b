"""Options that several commands share, defined once so that they read the same everywhere."""

from __future__ import annotations

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
