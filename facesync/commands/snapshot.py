"""``facesync snapshot [MANIFEST] --out FILE``: save the live state for plans made without credentials.

With MANIFEST: exactly what ``facesync plan MANIFEST`` reads, plus the face_tokens of the manifest's
images (resolved as plan resolves them: token cache, then ``detect``). Without: the whole library.
The target follows plan's order (``--target``, ``FACESYNC_TARGET``, the manifest's ``target:``, the
default). The file is written atomically; it holds ids, user_info and face_tokens, never a secret.
"""

from __future__ import annotations

import click

from facesync.commands.options import concurrency_option, qps_option, refresh_options, target_option
from facesync.errors import EXIT_OK, ConfigError
from facesync.session import Session
from facesync.snapshot import write_snapshot
from facesync.words import counted


@click.command("snapshot")
@click.argument("manifest_path", metavar="[MANIFEST]", required=False, type=click.Path(dir_okay=False))
@target_option
@click.option("--out", "-o", "out", metavar="FILE", type=click.Path(dir_okay=False), required=True,
              help="Where to write the snapshot (JSON), for `facesync plan MANIFEST --live FILE`.")
@qps_option
@concurrency_option
@refresh_options
def command(manifest_path: str | None, target: str | None, out: str, qps: float | None, concurrency: int,
            refresh: str | None, state_file: str | None, audit: int | None) -> int:
    """Save the library's live state (of MANIFEST's scope, or all of it) to the --out FILE.

    \b
    Examples:
      facesync snapshot faceset.yaml --target baidu --out live.json   # with credentials
      facesync plan faceset.yaml --live live.json                      # later, without any
    """
    options = {"qps": qps, "concurrency": concurrency, "if_missing": "error", "refresh": refresh,
               "state": state_file, "audit": audit}
    if manifest_path:
        with Session.for_manifest(manifest_path, target, **options) as session:
            snapshot = session.snapshot()
    else:
        if refresh == "incremental" or audit is not None:
            raise ConfigError("--refresh incremental and --audit need a MANIFEST",
                              hint="a snapshot of the whole library reads every user")
        with Session(target, **options) as session:
            snapshot = session.snapshot(whole=True)
    write_snapshot(snapshot, out)
    live = snapshot.live
    users = sum(len(group.users) for group in live.groups.values())
    tokens = len(snapshot.tokens) + len(snapshot.url_tokens)
    click.echo(f"Saved the live state of {snapshot.target} ({counted(len(live.groups), 'group')} read, "
               f"{counted(users, 'user')}, {counted(tokens, 'image token')}) to {out}; plan against it with: "
               f"facesync plan MANIFEST --live {out}", err=True)
    return EXIT_OK
