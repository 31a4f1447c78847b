"""The command line: argument parsing and exit codes only.

Each command lives in ``facesync/commands/`` and returns its exit code; this module assembles them,
sets up logging, and turns every ``FacesyncError`` into a message and its exit code, never a traceback.
Exit codes: 0 done or no changes, 1 error, 2 changes present (``plan --detailed-exitcode``), 3 unsafe.

Global options (``-v``, ``-q``, ``--log-format``, ``--no-color``) may come before or after the command,
as people type them (``facesync plan faceset.yaml -v``): ``hoist_global_options`` moves those written
after it to the front, unless the command has an option of that name itself (``plan --no-color``).
"""

from __future__ import annotations

import importlib
import os
import re
import sys

import click

from facesync import __version__, logs
from facesync.errors import EXIT_ERROR, EXIT_INTERRUPTED, FacesyncError

# command name -> module in facesync.commands that defines ``command`` (a click.Command)
COMMANDS = ("validate", "validate-changed", "plan", "apply", "show", "export", "snapshot", "doctor", "serve",
            "completion")


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
@click.option("--no-color", is_flag=True, help="No colour even on a terminal (as NO_COLOR=1 does).")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool, log_format: str, no_color: bool) -> None:
    """Keep a Baidu Face V3 face library equal to a YAML manifest.

    \b
    Start here:
      facesync validate faceset.yaml      check the manifest, no network
      facesync plan faceset.yaml          show what would change
      facesync apply faceset.yaml         make the changes (asks first)
    """
    ctx.obj = {"verbosity": -1 if quiet else verbose}
    logs.configure(ctx.obj["verbosity"], log_format)
    if no_color:
        os.environ["NO_COLOR"] = "1"  # https://no-color.org: read by every command's output and by rich


_VALUED_GLOBALS = {"--log-format"}


def _is_global(word: str) -> bool:
    name = word.split("=", 1)[0]
    return name in ("-q", "--quiet", "--verbose", "--no-color", *_VALUED_GLOBALS) or bool(re.fullmatch(r"-v+", word))


def _take(words) -> list[str]:
    """The next word, if there is one."""
    return [word for word in (next(words, None),) if word is not None]


def hoist_global_options(args: list[str]) -> list[str]:
    """``args`` with the global options that follow the command name moved before it."""
    position = 0
    while position < len(args) and args[position].startswith("-") and args[position] != "--":
        position += 2 if args[position] in _VALUED_GLOBALS else 1
    if position >= len(args) or args[position] == "--":
        return list(args)
    command = cli.get_command(None, args[position])
    if command is None:
        return list(args)
    own = {name: param for param in command.params if isinstance(param, click.Option)
           for name in (*param.opts, *param.secondary_opts)}
    moved: list[str] = []
    kept: list[str] = []
    rest = iter(args[position + 1:])
    for word in rest:
        if word == "--":
            kept += [word, *rest]
            break
        name = word.split("=", 1)[0]
        if name in own:
            kept.append(word)
            takes_value = not (own[name].is_flag or own[name].count)
            if takes_value and "=" not in word:
                kept.extend(_take(rest))  # its value, even one that looks like -v
        elif _is_global(word):
            moved.append(word)
            if name in _VALUED_GLOBALS and "=" not in word:
                moved.extend(_take(rest))
        else:
            kept.append(word)
    return [*args[:position], *moved, args[position], *kept]


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    verbose = any(arg in ("-v", "-vv", "--verbose") for arg in args)
    try:
        code = cli.main(args=hoist_global_options(args), prog_name="facesync", standalone_mode=False)
    except FacesyncError as error:
        click.echo(f"Error: {logs.redact(str(error))}", err=True)
        code = error.exit_code
    except click.exceptions.Abort as error:
        if isinstance(error.__cause__ or error.__context__, KeyboardInterrupt):  # click's word for Ctrl-C
            click.echo("Interrupted.", err=True)
            code = EXIT_INTERRUPTED
        else:
            click.echo("Aborted.", err=True)
            code = EXIT_ERROR
    except click.ClickException as error:
        error.show()
        code = EXIT_ERROR  # not click's 2: exit 2 means "changes present" here
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - a bug: say so plainly; the traceback only on request
        if verbose:
            import traceback

            click.echo(logs.redact(traceback.format_exc()), err=True)
        click.echo(f"Internal error: {logs.redact(f'{type(error).__name__}: {error}')}"
                   " (run with -v for details and please report it)", err=True)
        code = EXIT_ERROR
    sys.exit(code if isinstance(code, int) else 0)
