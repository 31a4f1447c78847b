"""``facesync completion SHELL``: print the shell completion script, so installing it is one line.

The script is click's own (the same one ``_FACESYNC_COMPLETE=bash_source facesync`` prints): the shell
calls facesync back with ``_FACESYNC_COMPLETE`` set, and facesync answers with command names, options
and choices, so the completions always match the installed version. Printing it from a command (as
kubectl, gh and poetry do) saves users from remembering the environment-variable incantation.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from facesync.errors import EXIT_OK

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_FACESYNC_COMPLETE"
PROG_NAME = "facesync"


def completion_script(root: click.Command, shell: str) -> str:
    """The completion script for ``shell`` that completes ``root`` invoked as ``facesync``."""
    completion_class = get_completion_class(shell)
    if completion_class is None:  # only reachable if click drops a shell it supports today
        raise click.BadParameter(f"unsupported shell {shell!r}", param_hint="SHELL")
    return completion_class(root, {}, PROG_NAME, COMPLETE_VAR).source()


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS), metavar="SHELL")
@click.pass_context
def command(ctx: click.Context, shell: str) -> int:
    """Print the completion script for SHELL (bash, zsh or fish).

    It completes command names, options and their fixed choices (--format, --log-format, ...).

    \b
    Examples:
      eval "$(facesync completion bash)"        # bash 4.4+, this shell only
      facesync completion bash > ~/.local/share/bash-completion/completions/facesync
      facesync completion zsh > "${fpath[1]}/_facesync"           # then restart zsh
      facesync completion fish > ~/.config/fish/completions/facesync.fish
    """
    click.echo(completion_script(ctx.find_root().command, shell), nl=False)
    return EXIT_OK
