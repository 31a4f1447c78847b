"""``facesync doctor``: observe the service's answers where Baidu's documentation is silent (see doctor.py)."""

from __future__ import annotations

import json

import click

from facesync.commands.options import target_option
from facesync.doctor import read_photos, render_text
from facesync.errors import EXIT_OK
from facesync.session import Session


@click.command("doctor")
@target_option
@click.option("--image", "images", metavar="FILE", multiple=True, type=click.Path(dir_okay=False),
              help="A JPEG or PNG photo of one face to probe with (repeatable; one is enough).")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="text for people, json for machines.")
def command(target: str | None, images: tuple[str, ...], fmt: str) -> int:
    """Observe how the target answers where Baidu's documentation is silent.

    Works in scratch groups it creates and always removes, with copies of your photo, in fewer than 100
    calls, and prints what it observed and what facesync does about each answer.

    \b
    Examples:
      facesync doctor --target baidu --image me.jpg
      facesync doctor --target http://127.0.0.1:8080 --image me.jpg --format json
    """
    photos = read_photos(images)  # a bad photo is refused before anything is opened
    with Session(target, if_missing="error") as session:  # a library to observe, never a new one
        report = session.doctor(photos)
    click.echo(json.dumps(report.to_json(), indent=2, ensure_ascii=False) if fmt == "json" else render_text(report))
    return EXIT_OK
