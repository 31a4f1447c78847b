"""``facesync serve``: the local library behind Baidu's wire protocol, on 127.0.0.1 by default.

Point the official SDK, facesync (``--target http://127.0.0.1:8155``) or any Baidu client at it to try
things before touching Baidu; tests and benchmarks use its QPS limit, latency, faults and admin API.
The credentials it accepts default to local-api-key / local-secret-key / app id 10000001, or come from
BAIDU_API_KEY / BAIDU_SECRET_KEY / BAIDU_APP_ID; they are never printed.
"""

from __future__ import annotations

import ipaddress
import signal
import sys
from pathlib import Path

import click

from facesync import logs
from facesync.errors import ConfigError
from facesync.local.faults import FaultInjector, image_check_for, load_faults
from facesync.local.server import DEFAULT_IDLE_TIMEOUT, DEFAULT_TOKEN_TTL, FaceApi, FaceServer, ServerSettings
from facesync.local.store import BACKGROUND_DELETE_RATE, MAX_FACES_PER_USER, LocalLibrary
from facesync.local.unknowns import CHOICES, ENV_VAR, LENIENT

DEFAULT_DB = ".facesync/library.db"
DEFAULT_PORT = 8155
DEFAULT_API_KEY = "local-api-key"
DEFAULT_SECRET_KEY = "local-secret-key"
DEFAULT_APP_ID = "10000001"


@click.command("serve")
@click.option("--db", default=DEFAULT_DB, show_default=True, metavar="FILE", help="The library's SQLite file.")
@click.option("--host", metavar="HOST", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 exposes the library to the network.")
@click.option("--port", metavar="PORT", type=click.IntRange(0, 65535), default=DEFAULT_PORT, show_default=True,
              help="0 picks a free port (the 'listening on' line says which).")
@click.option("--qps", type=click.IntRange(min=1), default=None, metavar="N",
              help="Answer error 18 above N calls in any one second (default: no limit).")
@click.option("--latency-ms", metavar="N", type=click.IntRange(min=0), default=0, show_default=True,
              help="Delay every API answer by N ms.")
@click.option("--faults", "faults_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="YAML file of injected faults and rejected images (see examples/faults.example.yaml).")
@click.option("--journal", "journal_file", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Also append every mutating call to this JSON-lines file (survives restarts).")
@click.option("--api-key", envvar="BAIDU_API_KEY", default=DEFAULT_API_KEY, metavar="KEY",
              help=f"API key clients must present [env BAIDU_API_KEY; default {DEFAULT_API_KEY}].")
@click.option("--secret-key", envvar="BAIDU_SECRET_KEY", default=DEFAULT_SECRET_KEY, metavar="KEY",
              help=f"Secret key clients must present [env BAIDU_SECRET_KEY; default {DEFAULT_SECRET_KEY}].")
@click.option("--app-id", envvar="BAIDU_APP_ID", default=DEFAULT_APP_ID, metavar="ID",
              help=f"App id inside access tokens [env BAIDU_APP_ID; default {DEFAULT_APP_ID}].")
@click.option("--token-ttl", type=click.IntRange(min=1), default=DEFAULT_TOKEN_TTL, show_default=True,
              metavar="SECONDS", help="Lifetime of access tokens; after it calls get error 111.")
@click.option("--max-faces-per-user", type=click.IntRange(min=0), default=MAX_FACES_PER_USER, show_default=True,
              metavar="N", help="Refuse a user's next face in a group beyond N (Baidu's cap); 0: no cap.")
@click.option("--background-group-delete/--no-background-group-delete", default=True, show_default=True,
              help="Delete groups of over 500 faces in the background, as Baidu does: meanwhile the id takes "
                   "no faces and cannot be re-created.")
@click.option("--group-delete-rate", type=click.FloatRange(min=0, min_open=True), default=BACKGROUND_DELETE_RATE,
              show_default=True, metavar="FACES_PER_S", help="Speed of background group deletion.")
@click.option("--loose-user-id-limits", is_flag=True,
              help="Take 128-byte user_ids on every endpoint (Baidu: 48 on all but user/add).")
@click.option("--idle-timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_IDLE_TIMEOUT,
              show_default=True, metavar="SECONDS", help="Close a connection that sends nothing for this long.")
@click.option("--allow-default-keys-remote", is_flag=True,
              help="Listen beyond loopback although the default keys are in use (anyone who can reach the "
                   "server can then change the library).")
@click.option("--detect-faces", is_flag=True,
              help="Refuse uploads without a face the local detector finds (222202), as Baidu does "
                   "(the 'faces' extra).")
@click.option("--unknowns", type=click.Choice(CHOICES), envvar=ENV_VAR, default=LENIENT, show_default=True,
              help="How to answer where Baidu's docs are silent: the kind answer, or the one most dangerous "
                   f"for a client [env {ENV_VAR}].")
def command(db: str, host: str, port: int, qps: int | None, latency_ms: int, faults_file: str | None,
            journal_file: str | None, api_key: str, secret_key: str, app_id: str, token_ttl: int,
            max_faces_per_user: int, background_group_delete: bool, group_delete_rate: float,
            loose_user_id_limits: bool, idle_timeout: float, allow_default_keys_remote: bool, unknowns: str,
            detect_faces: bool) -> int:
    """Serve a local face library over Baidu's Face V3 HTTP protocol.

    \b
    Examples:
      facesync serve                                  # http://127.0.0.1:8155
      facesync serve --qps 2 --latency-ms 30          # like a free-tier app, far away
      facesync serve --faults examples/faults.example.yaml --journal calls.jsonl
      facesync serve --detect-faces                   # 222202 for photos without a face
      BAIDU_API_KEY=local-api-key BAIDU_SECRET_KEY=local-secret-key \\
        facesync plan faceset.yaml --target http://127.0.0.1:8155
    """
    for secret in (api_key, secret_key):
        logs.register_secret(secret)
    if not api_key or not secret_key or not app_id:
        raise ConfigError("--api-key, --secret-key and --app-id must not be empty")
    default_keys = api_key == DEFAULT_API_KEY or secret_key == DEFAULT_SECRET_KEY
    if default_keys and not _is_loopback(host):
        if not allow_default_keys_remote:
            raise ConfigError(f"refusing to listen on {host} with the default keys: anyone who can reach it could "
                              "read and change the library",
                              hint="set --api-key and --secret-key (or BAIDU_API_KEY and BAIDU_SECRET_KEY), listen "
                                   "on 127.0.0.1, or pass --allow-default-keys-remote")
        click.echo(f"facesync serve: warning: listening on {host} with the default keys", err=True)
    faults = load_faults(faults_file) if faults_file else None
    settings = ServerSettings(api_key=api_key, secret_key=secret_key, app_id=app_id, token_ttl=token_ttl,
                              qps=qps, latency_ms=latency_ms, journal_path=journal_file, idle_timeout=idle_timeout)
    library = _open_library(db, max_faces_per_user=max_faces_per_user or None, unknowns=unknowns,
                            background_group_delete=background_group_delete, group_delete_rate=group_delete_rate,
                            user_id_limits_per_endpoint=not loose_user_id_limits,
                            image_check=image_check_for(faults) if faults else None,
                            face_check=_face_check(detect_faces))
    try:
        api = FaceApi(library, settings, FaultInjector(faults) if faults else None)
        try:
            server = FaceServer(api, host, port)
        except OSError as error:
            api.close()
            raise ConfigError(f"cannot listen on {host}:{port}: {error.strerror or error}",
                              hint="pick another --port, or 0 for any free one") from None
        _serve(server, db, app_id, unknowns)
    finally:
        library.close()
    return 0


def _is_loopback(host: str) -> bool:
    """True only for addresses that cannot be reached from another machine (names other than localhost
    count as reachable: what they resolve to can change)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _open_library(db: str, **options) -> LocalLibrary:
    Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
    return LocalLibrary(db, **options)


def _face_check(detect_faces: bool):
    """``--detect-faces``: the detector's verdict on each uploaded image (fails now if it is missing)."""
    if not detect_faces:
        return None
    from facesync.faces import emulator_face_check

    return emulator_face_check()


def _serve(server: FaceServer, db: str, app_id: str, unknowns: str) -> None:
    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        click.echo(f"facesync serve: listening on {server.url}")
        sys.stdout.flush()
        click.echo(f"facesync serve: library {db}, app id {app_id}, {unknowns} unknowns; Ctrl-C to stop", err=True)
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("facesync serve: stopped", err=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
