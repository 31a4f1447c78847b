"""``facesync completion``: the printed scripts, and the completions the shell gets back from facesync."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest

from facesync.cli import cli
from tests.support.cli import environment, run_facesync

SHELLS = ("bash", "zsh", "fish")


def facesync_with(env: dict[str, str]) -> subprocess.CompletedProcess:
    return run_facesync(env=environment(**env))


def bash_complete(words: str, cword: int) -> list[tuple[str, str]]:
    """What facesync answers the bash script's callback: (type, value) pairs."""
    done = facesync_with({"_FACESYNC_COMPLETE": "bash_complete", "COMP_WORDS": words,
                             "COMP_CWORD": str(cword)})
    assert done.returncode == 0, done.stderr
    return [tuple(line.split(",", 1)) for line in done.stdout.splitlines()]


def defined_commands() -> list[str]:
    return cli.list_commands(click.Context(cli))


@pytest.mark.parametrize("shell", SHELLS)
def test_prints_a_script_that_calls_facesync_back(shell):
    done = run_facesync("completion", shell)

    assert done.returncode == 0, done.stderr
    assert "_FACESYNC_COMPLETE" in done.stdout
    assert f"{shell}_complete" in done.stdout  # the callback asks for this shell's answer format
    assert done.stderr == ""


def test_rejects_an_unknown_shell_without_a_traceback():
    done = run_facesync("completion", "tcsh")

    assert done.returncode == 1
    assert "tcsh" in done.stderr
    assert "Traceback" not in done.stderr


def test_help_shows_how_to_install_it():
    done = run_facesync("completion", "--help")

    assert done.returncode == 0
    assert 'eval "$(facesync completion bash)"' in done.stdout
    assert "fish/completions" in done.stdout


def test_tab_after_facesync_lists_every_command():
    answers = bash_complete("facesync ", 1)

    assert {kind for kind, _ in answers} == {"plain"}
    assert [value for _, value in answers] == defined_commands()
    assert "completion" in defined_commands()


def test_tab_completes_a_command_prefix_and_choices():
    assert bash_complete("facesync compl", 1) == [("plain", "completion")]
    assert bash_complete("facesync completion ", 2) == [("plain", shell) for shell in SHELLS]
    assert bash_complete("facesync --log-format ", 2) == [("plain", "text"), ("plain", "json")]


def launcher_dir(tmp_path: Path) -> Path:
    """A folder with a ``facesync`` that runs this checkout: the scripts call `facesync` by name."""
    launcher = tmp_path / "bin" / "facesync"
    launcher.parent.mkdir(exist_ok=True)
    launcher.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m facesync "$@"\n')
    launcher.chmod(0o755)
    return launcher.parent


def run_shell(argv: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    path = f"{launcher_dir(tmp_path)}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PATH": path})


def test_sourced_bash_script_fills_compreply(tmp_path):
    """The whole loop as bash runs it: source the script, call its function, read COMPREPLY."""
    script = tmp_path / "facesync.bash"
    script.write_text(run_facesync("completion", "bash").stdout)
    probe = (f'source "{script}"; COMP_WORDS=(facesync compl); COMP_CWORD=1; '
             '_facesync_completion facesync; printf "%s\\n" "${COMPREPLY[@]}"')

    done = run_shell(["bash", "-c", probe], tmp_path)

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["completion"]
    assert script.read_text().count("complete -o nosort -F _facesync_completion facesync") == 1


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish")
def test_sourced_fish_script_completes_commands_and_choices(tmp_path):
    script = tmp_path / "facesync.fish"
    script.write_text(run_facesync("completion", "fish").stdout)

    commands = run_shell(["fish", "-c", f"source {script}; complete -C 'facesync compl'"], tmp_path)
    shells = run_shell(["fish", "-c", f"source {script}; complete -C 'facesync completion '"], tmp_path)

    assert [line.split("\t")[0] for line in commands.stdout.splitlines()] == ["completion"]
    assert sorted(shells.stdout.split()) == ["bash", "fish", "zsh"]


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_script_is_valid_zsh(tmp_path):
    script = tmp_path / "_facesync"
    script.write_text(run_facesync("completion", "zsh").stdout)

    done = subprocess.run(["zsh", "-n", str(script)], check=False, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert script.read_text().startswith("#compdef facesync")


def test_a_manifest_argument_completes_as_a_file_name():
    assert bash_complete("facesync validate ", 2) == [("file", "")]
    assert ("plain", "--format") in bash_complete("facesync validate --", 2)
