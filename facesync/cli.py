"""The command line: argument parsing and exit codes only.

Each command lives in ``facesync/commands/`` and returns its exit code; this module assembles them,
sets up logging, and turns every ``FacesyncError`` into a message and its exit code, never a traceback.
Exit codes: 0 done or no changes, 1 error, 2 changes present (``plan --detailed-exitcode``), 3 unsafe.
"""

from __future__ import annotations

import importlib
import sys

import click

from facesync import __version__, logs
from facesync.errors import EXIT_ERROR, FacesyncError

# command name -> module in facesync.commands that defines ``command`` (a click.Command)
COMMANDS = ("validate", "validate-changed", "plan", "apply", "show", "export", "snapshot", "serve", "completion")


class _Commands(click.Group):
    """Imports a command's module only when it runs, so ``facesync validate`` starts fast."""

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._module(name) is not None]

    def get_command(self, ctx, name):
        module = self._module(name) if name in COMMANDS else None
        return module.command if module is not None else None

    @staticmethod
    def _module(name):
        try:
            return importlib.import_module(f"facesync.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as missing:
            if missing.name == f"facesync.commands.{name.replace('-', '_')}":
                return None
            raise


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="facesync")
@click.option("-v", "--verbose", count=True, help="More log lines (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="json: one JSON object a line, for log shippers.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, log_format: str) -> None:
    """Keep a Baidu Face V3 face library equal to a YAML manifest.

    \b
    Start here:
      facesync validate faceset.yaml      check the manifest, no network
      facesync plan faceset.yaml          show what would change
      facesync apply faceset.yaml         make the changes (asks first)
    """
    ctx.obj = {"verbosity": -1 if quiet else verbose}
    logs.configure(ctx.obj["verbosity"], log_format)


def main(argv: list[str] | None = None) -> None:
    verbose = any(arg in ("-v", "-vv", "--verbose") for arg in (argv or sys.argv[1:]))
    try:
        code = cli.main(args=argv, prog_name="facesync", standalone_mode=False)
    except FacesyncError as error:
        click.echo(f"Error: {logs.redact(str(error))}", err=True)
        code = error.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = EXIT_ERROR
    except click.ClickException as error:
        error.show()
        code = EXIT_ERROR  # not click's 2: exit 2 means "changes present" here
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    except Exception as error:  # noqa: BLE001 - a bug: say so plainly; the traceback only on request
        if verbose:
            import traceback

            click.echo(logs.redact(traceback.format_exc()), err=True)
        click.echo(f"Internal error: {logs.redact(f'{type(error).__name__}: {error}')}"
                   " (run with -v for details and please report it)", err=True)
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else 0)
