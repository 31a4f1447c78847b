"""The CI recipes and the pre-commit hook: valid YAML, the keys their runners require, and every
``facesync ...`` command line in them naming a command and options that the CLI really defines.

Command lines are found in shell text (``run:`` of GitHub steps, ``script:`` of GitLab jobs, a hook's
``entry`` + ``args``), split with ``shlex`` the way a shell would, and checked against the click
command objects, so renaming a flag without updating a recipe fails here.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import click
import pytest
import yaml

from facesync.cli import cli
from tests.support.cli import run_facesync

ROOT = Path(__file__).resolve().parent.parent
GITHUB = sorted((ROOT / "examples" / "ci" / "github").glob("*.yml"))
GITLAB = ROOT / "examples" / "ci" / "gitlab" / ".gitlab-ci.yml"
GITLAB_HELPER = ROOT / "examples" / "ci" / "gitlab" / "facesync_gitlab.py"
HOOKS = ROOT / ".pre-commit-hooks.yaml"
GITLAB_KEYWORDS = {"stages", "variables", "default", "workflow", "include", "image", "services", "cache",
                   "before_script", "after_script"}
OPERATORS = set(";&|()\n")  # words made of these end a command: ; && || | & ( ) and a newline
SHELL_PREFIXES = {"if", "then", "else", "elif", "do", "while", "until", "!", "time", "exec", "command"}


def load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def github_on(workflow: dict):
    """PyYAML (YAML 1.1) reads the bare key ``on`` as the boolean True."""
    return workflow.get("on", workflow.get(True))


# ---- finding facesync command lines in shell text -------------------------------------------------

def shell_words(script: str) -> list[str]:
    """Words and operators of a shell script, with what the checks below cannot judge replaced."""
    text = re.sub(r"\$\{\{.*?\}\}", "EXPR", script)  # GitHub expressions
    text = text.replace("\\\n", " ")  # line continuations
    words: list[str] = []
    for line in text.splitlines():  # a newline ends a command like ";" does
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        try:
            words += [*lexer, "\n"]
        except ValueError as error:
            raise ValueError(f"{error} in: {line}") from None
    return words


def facesync_commands(script: str) -> Iterator[list[str]]:
    """Each ``facesync ...`` invocation in ``script``, as its arguments after ``facesync``."""
    current: list[str] = []
    words = iter([*shell_words(script), "\n"])
    for word in words:
        if set(word) & set("<>") and set(word) <= set("<>&"):  # a redirection and its target
            next(words, None)
            if current and current[-1].isdigit():
                current.pop()  # the descriptor of `2>`
        elif word and set(word) <= OPERATORS:
            if current[:1] == ["facesync"]:
                yield current[1:]
            elif current[:2] in (["bash", "-c"], ["sh", "-c"]) and len(current) > 2:
                yield from facesync_commands(current[2])
            current = []
        elif not current and (word in SHELL_PREFIXES or re.fullmatch(r"[A-Za-z_]\w*=.*", word)):
            continue  # `if facesync ...`, `FOO=bar facesync ...`
        else:
            current.append(word)


def test_the_command_finder_sees_what_a_shell_would_run():
    script = ('set +e\nif [ -n "$K" ]; then\n  facesync plan "$M" --format markdown \\\n'
              '    --out plan.json > plan.md\nfi\ncode=$?; X=1 facesync -v validate a.yaml && echo "facesync x"\n'
              'pip install facesync==0.1.0\nout=$(facesync snapshot --out ${{ env.F }})')

    found = list(facesync_commands(script))

    assert found == [["plan", "$M", "--format", "markdown", "--out", "plan.json"],
                     ["-v", "validate", "a.yaml"], ["snapshot", "--out", "EXPR"]]


# ---- checking a command line against the click commands ------------------------------------------

def options_of(command: click.Command) -> dict[str, click.Parameter]:
    found = {}
    for param in command.params:
        if isinstance(param, click.Option):
            for name in (*param.opts, *param.secondary_opts):
                found[name] = param
    found["--help"] = found["-h"] = None
    return found


def problems_in(args: list[str]) -> list[str]:
    """What is wrong with ``facesync ARGS``: unknown command, unknown option, a value not among the choices."""
    ctx = click.Context(cli, info_name="facesync")
    problems: list[str] = []
    command: click.Command = cli
    positional = 0
    words = iter(args)
    for word in words:
        if word.startswith("-") and len(word) > 1:
            name, has_value, value = word.partition("=")
            options = options_of(command)
            if re.fullmatch(r"-[a-zA-Z]{2,}", name) and all(options.get(f"-{c}") for c in name[1:]):
                continue  # a cluster of short flags: -vv
            if name not in options:
                problems.append(f"{'facesync' if command is cli else command.name} has no option {name}")
                continue
            param = options[name]
            if param is None or param.is_flag or param.count:
                continue
            if not has_value:
                value = next(words, "")
            if isinstance(param.type, click.Choice) and "$" not in value and value not in param.type.choices:
                problems.append(f"{name} {value!r} is not one of {list(param.type.choices)}")
        elif command is cli:
            sub = cli.get_command(ctx, word)
            if sub is None:
                problems.append(f"no command {word!r} (the CLI has {cli.list_commands(ctx)})")
                return problems
            command = sub
        else:
            positional += 1
    if command is cli:
        problems.append("no command given")
    else:
        room = sum(1 if p.nargs == 1 else 10**6 if p.nargs == -1 else p.nargs
                   for p in command.params if isinstance(p, click.Argument))
        if positional > room:
            problems.append(f"{command.name} takes {room} argument(s), got {positional}")
    return problems


def test_the_checker_catches_wrong_command_lines():
    assert problems_in(["completion", "bash"]) == []
    assert problems_in(["-q", "--log-format", "json", "completion", "zsh"]) == []
    assert problems_in(["-vv", "completion", "fish"]) == []
    assert problems_in(["--colour", "completion", "fish"]) == ["facesync has no option --colour"]
    assert problems_in(["complete", "bash"])[0].startswith("no command 'complete'")
    assert problems_in(["completion", "--shell", "bash"]) == ["completion has no option --shell"]
    assert problems_in(["--log-format=xml", "completion", "bash"]) == [
        "--log-format 'xml' is not one of ['text', 'json']"]
    assert problems_in(["completion", "bash", "zsh"]) == ["completion takes 1 argument(s), got 2"]


# ---- the recipes ---------------------------------------------------------------------------------

def github_scripts(path: Path) -> Iterator[str]:
    for job in load(path)["jobs"].values():
        for step in job["steps"]:
            if "run" in step:
                yield step["run"]


def gitlab_scripts(path: Path) -> Iterator[str]:
    document = load(path)
    blocks = [document.get("default", {})] + [job for name, job in document.items()
                                                if name not in GITLAB_KEYWORDS and isinstance(job, dict)]
    for block in blocks:
        for key in ("before_script", "script", "after_script"):
            yield from block.get(key, [])


def hook_command_lines() -> Iterator[str]:
    for hook in load(HOOKS):
        yield " ".join([hook["entry"], *map(shlex.quote, hook.get("args", [])), "faceset.yaml"])


def all_command_lines() -> list[tuple[str, list[str]]]:
    scripts = [(path.name, script) for path in GITHUB for script in github_scripts(path)]
    scripts += [(GITLAB.name, script) for script in gitlab_scripts(GITLAB)]
    scripts += [(HOOKS.name, line) for line in hook_command_lines()]
    return [(where, args) for where, script in scripts for args in facesync_commands(script)]


def test_there_are_four_github_workflows_and_they_parse():
    assert [path.name for path in GITHUB] == ["facesync-apply.yml", "facesync-drift.yml",
                                              "facesync-plan-comment.yml", "facesync-plan.yml"]
    for path in GITHUB:
        assert isinstance(load(path), dict), path


@pytest.mark.parametrize("path", GITHUB, ids=lambda path: path.name)
def test_github_workflow_has_the_required_keys(path):
    workflow = load(path)

    assert workflow.get("name")
    assert github_on(workflow), f"{path.name}: no `on:` trigger"
    assert workflow["jobs"], f"{path.name}: no jobs"
    for name, job in workflow["jobs"].items():
        assert job.get("runs-on"), f"{path.name}: job {name} has no runs-on"
        assert job.get("steps"), f"{path.name}: job {name} has no steps"
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"{path.name}: a step needs exactly one of run/uses"
    assert workflow.get("concurrency", {}).get("group"), f"{path.name}: no concurrency group"


@pytest.mark.parametrize("path", [path for path in GITHUB if path.name != "facesync-plan-comment.yml"],
                         ids=lambda path: path.name)
def test_github_workflow_names_the_baidu_secrets_and_pins_the_install(path):
    text = path.read_text(encoding="utf-8")

    for secret in ("BAIDU_API_KEY", "BAIDU_SECRET_KEY", "BAIDU_APP_ID"):
        assert f"secrets.{secret}" in text, f"{path.name} does not pass {secret}"
    assert 'pip install "$FACESYNC_PIP_SPEC"' in text


def test_the_workflows_do_what_the_issue_asks():
    plan, apply, drift = (load(ROOT / "examples" / "ci" / "github" / f"facesync-{name}.yml")
                          for name in ("plan", "apply", "drift"))
    plan_text = (ROOT / "examples" / "ci" / "github" / "facesync-plan.yml").read_text()

    assert "pull_request" in github_on(plan)
    assert "<!-- facesync-plan -->" in plan_text and "updateComment" in plan_text
    assert ["main"] == github_on(apply)["push"]["branches"]
    assert apply["concurrency"] == {"group": "facesync-apply", "cancel-in-progress": False}
    assert "schedule" in github_on(drift)
    assert plan["permissions"] == apply["permissions"] == drift["permissions"] == {}  # each job asks for its own
    assert apply["jobs"]["apply"]["permissions"]["contents"] == plan["jobs"]["plan"]["permissions"]["contents"] == "read"
    assert drift["jobs"]["drift"]["permissions"] == {"contents": "read", "issues": "write"}
    comment = load(ROOT / "examples" / "ci" / "github" / "facesync-plan-comment.yml")
    assert github_on(comment)["workflow_run"]["workflows"] == [plan["name"]]
    assert "secrets." not in (ROOT / "examples" / "ci" / "github" / "facesync-plan-comment.yml").read_text()
    assert all("checkout" not in step.get("uses", "") for step in comment["jobs"]["comment"]["steps"])
    runs = "\n".join(github_scripts(ROOT / "examples" / "ci" / "github" / "facesync-drift.yml"))
    assert "--detailed-exitcode" in runs and "--label \"$DRIFT_LABEL\"" in runs and "gh issue close" in runs


def test_gitlab_pipeline_has_plan_apply_and_drift_jobs_with_rules():
    pipeline = load(GITLAB)
    jobs = {name: job for name, job in pipeline.items() if name not in GITLAB_KEYWORDS}

    assert set(jobs) == {"facesync:plan", "facesync:apply", "facesync:drift"}
    assert set(pipeline["stages"]) == {job["stage"] for job in jobs.values()}
    conditions = {name: " ".join(rule["if"] for rule in job["rules"]) for name, job in jobs.items()}
    assert "merge_request_event" in conditions["facesync:plan"]
    assert "$CI_DEFAULT_BRANCH" in conditions["facesync:apply"]
    assert '"schedule"' in conditions["facesync:drift"]
    assert jobs["facesync:apply"]["resource_group"] == "facesync-apply"
    for job in jobs.values():
        assert job["script"], "every job runs something"


def test_every_recipe_runs_facesync_commands():
    where = {where for where, _ in all_command_lines()}
    commands = {next(word for word in args if not word.startswith("-")) for _, args in all_command_lines()}

    assert where == {"facesync-plan.yml", "facesync-apply.yml", "facesync-drift.yml", ".gitlab-ci.yml",
                     ".pre-commit-hooks.yaml"}
    assert {"validate", "plan", "apply", "snapshot"} <= commands


@pytest.mark.parametrize("where, args", all_command_lines(),
                         ids=lambda value: " ".join(value) if isinstance(value, list) else value)
def test_command_line_matches_the_cli(where, args):
    assert problems_in(args) == [], f"{where}: facesync {' '.join(args)}"


# ---- the linters that the recipes' users run: shellcheck, zizmor, the GitHub and GitLab schemas -----

def tool(name: str) -> str:
    """A linter of the test extra, from this interpreter's environment first (no network, no download)."""
    found = shutil.which(name, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert found, f"{name} is not installed: pip install -e '.[test]'"
    return found


def run_tool(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("GH_TOKEN", "GITHUB_TOKEN")}
    return subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def recipe_shell_scripts() -> Iterator[tuple[str, str]]:
    """(name, bash script) of every GitHub ``run:`` step and of every GitLab job (before_script + script)."""
    for path in GITHUB:
        for job_name, job in load(path)["jobs"].items():
            for number, step in enumerate(job["steps"]):
                if "run" in step:  # an expression left in run: would be zizmor's finding, not shellcheck's
                    yield f"{path.stem}-{job_name}-{number}", re.sub(r"\$\{\{.*?\}\}", "EXPR", step["run"])
    pipeline = load(GITLAB)
    default = pipeline.get("default", {})
    for name, job in pipeline.items():
        if name not in GITLAB_KEYWORDS and isinstance(job, dict):
            lines = [*job.get("before_script", default.get("before_script", [])), *job["script"]]
            yield f"gitlab-{name.replace(':', '-')}", "\n".join(lines)


def test_recipe_scripts_pass_shellcheck(tmp_path):
    files = []
    for name, script in recipe_shell_scripts():
        files.append(tmp_path / f"{name}.sh")
        files[-1].write_text("#!/usr/bin/env bash\n" + script + "\n")  # GitHub's and GitLab's shell is bash
    assert len(files) >= 10

    checked = run_tool(tool("shellcheck"), "--shell=bash", "--severity=style", *map(str, files))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_github_workflows_pass_zizmor():
    audited = run_tool(tool("zizmor"), "--offline", "--no-progress", "--format", "plain",
                       *(str(path.relative_to(ROOT)) for path in GITHUB))

    assert audited.returncode == 0, audited.stdout + audited.stderr
    assert "No findings" in audited.stdout + audited.stderr


def test_every_action_is_pinned_by_commit():
    for path in GITHUB:
        for job in load(path)["jobs"].values():
            for step in job["steps"]:
                if "uses" in step:
                    assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", step["uses"]), f"{path.name}: {step['uses']}"
        for line in path.read_text().splitlines():
            if "uses: " in line:
                assert re.search(r"@[0-9a-f]{40}  # v\d+\.\d+\.\d+$", line), f"{path.name}: say the version: {line}"


@pytest.mark.parametrize("schema, paths", [("vendor.github-workflows", GITHUB), ("vendor.gitlab-ci", [GITLAB])],
                         ids=["github", "gitlab"])
def test_recipes_follow_the_ci_schema(schema, paths):
    checked = run_tool(tool("check-jsonschema"), "--builtin-schema", schema, *map(str, paths))

    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_linters_catch_what_the_recipes_avoid(tmp_path):
    """The checks above can fail: an unquoted variable, an unpinned action and a bad key are found."""
    (tmp_path / "unquoted.sh").write_text('#!/usr/bin/env bash\ngit ls-tree -r HEAD -- $FACESYNC_PATHS\n')
    workflow = tmp_path / "bad.yml"
    workflow.write_text("on: push\npermissions: {}\njobs:\n  j:\n    runs-on: ubuntu-latest\n    steps:\n"
                        "      - uses: actions/checkout@v4\n        with: {persist-credentials: false}\n"
                        "      - run: echo ${{ github.event.head_commit.message }}\n")
    (tmp_path / "bad-gitlab.yml").write_text("job:\n  scripts: [echo]\n")

    assert "SC2086" in run_tool(tool("shellcheck"), str(tmp_path / "unquoted.sh")).stdout
    zizmor = run_tool(tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(workflow))
    assert "unpinned-uses" in zizmor.stdout and "template-injection" in zizmor.stdout
    assert run_tool(tool("check-jsonschema"), "--builtin-schema", "vendor.gitlab-ci",
                    str(tmp_path / "bad-gitlab.yml")).returncode == 1


# ---- how facesync is installed: one variable, one distribution name, no placeholder -----------------

def pip_specs() -> dict[str, str]:
    specs = {path.name: load(path).get("env", {}).get("FACESYNC_PIP_SPEC") for path in GITHUB}
    specs[GITLAB.name] = load(GITLAB)["variables"]["FACESYNC_PIP_SPEC"]
    return {where: spec for where, spec in specs.items() if spec is not None}


def readme_pre_commit_config() -> dict:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```yaml\n# \.pre-commit-config\.yaml\n(.*?)```", readme, re.DOTALL)
    assert block, "the README shows a .pre-commit-config.yaml"
    return yaml.safe_load(block.group(1))


def test_every_recipe_installs_the_same_pinned_distribution():
    from packaging.requirements import Requirement

    specs = pip_specs()
    name = re.search(r'^name = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE).group(1)
    [hook] = [hook for repo in readme_pre_commit_config()["repos"] for hook in repo["hooks"]]

    assert set(specs) == {"facesync-plan.yml", "facesync-apply.yml", "facesync-drift.yml", ".gitlab-ci.yml"}
    assert len(set(specs.values())) == 1, specs
    spec = Requirement(next(iter(specs.values())))
    assert spec.name == name == "baidu-facesync"  # "facesync" on the index is another project
    assert str(spec.specifier).startswith("==") or (spec.url or "").count("@") == 1  # a version or a tag
    assert hook["additional_dependencies"] == [str(spec)]  # the pre-commit example installs the same
    assert f'pip install "{spec}"' in (ROOT / "README.md").read_text(encoding="utf-8")


def test_no_placeholder_is_left_to_edit():
    for path in [*GITHUB, GITLAB, HOOKS, ROOT / "README.md", ROOT / "examples" / "ci" / "README.md"]:
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"\bOWNER\b|HOST/|<your|CHANGE ?ME|TODO", text), path.name


# ---- the pre-commit hook -------------------------------------------------------------------------

def test_pre_commit_hook_sees_every_file_and_lets_facesync_choose():
    hook = next(hook for hook in load(HOOKS) if hook["id"] == "facesync-validate")

    assert hook["language"] == "python"  # pre-commit installs facesync once, in its own environment
    assert hook["pass_filenames"] is True and hook["require_serial"] is True and hook["always_run"] is True
    assert "files" not in hook and "types" not in hook  # a photo or a fragment must reach facesync too
    assert hook["entry"] == "facesync validate-changed"


def test_a_manifest_is_affected_by_any_file_in_its_folder():
    from facesync.affected import affected_manifests

    manifests = ["faceset.yaml", "prod/faceset.yaml", "prod/eu/faceset-eu.yml"]

    assert affected_manifests(manifests, ["prod/teams/sales.yaml"]) == ["faceset.yaml", "prod/faceset.yaml"]
    assert affected_manifests(manifests, ["prod/eu/faces/ana.png"]) == manifests
    assert affected_manifests(manifests[1:], ["docs/readme.md", "production/x.png"]) == []
    assert affected_manifests(manifests[1:], ["./prod/eu/../faceset.yaml"]) == ["prod/faceset.yaml"]
    assert affected_manifests(["faceset.yaml"], ["../elsewhere.png"]) == []


def run_hook(files: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """Run the hook as pre-commit does: entry, then args, then the staged file names, on PATH."""
    hook = next(hook for hook in load(HOOKS) if hook["id"] == "facesync-validate")
    argv = [*shlex.split(hook["entry"]), *hook.get("args", []), *files]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(argv, check=False, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


QUICKSTART = ROOT / "examples" / "quickstart" / "faceset.yaml"


@pytest.mark.skipif(not importlib.util.find_spec("facesync.commands.validate"), reason="validate not there yet")
@pytest.mark.skipif(not QUICKSTART.exists(), reason="no quick-start manifest yet")
def test_pre_commit_hook_validates_every_file_it_is_given(tmp_path):
    broken = tmp_path / "faceset-broken.yaml"
    broken.write_text("version: 1\ngroups: [unclosed\n")
    also_broken = tmp_path / "faceset-unknown-key.yaml"
    also_broken.write_text("version: 1\ngroupz: {}\n")
    good = str(QUICKSTART.relative_to(ROOT))

    alone = run_hook([good], ROOT)
    together = run_hook([str(broken), good, str(also_broken)], ROOT)

    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert together.returncode == 1
    assert "manifest OK" in together.stdout  # the good one between them was still checked
    assert "faceset-broken.yaml:3" in together.stderr and "faceset-unknown-key.yaml" in together.stderr
    assert "Traceback" not in together.stderr


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], check=True, cwd=cwd, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                               "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"})
    return done.stdout


def this_working_tree_as_a_repository(where: Path) -> Path:
    """facesync's files as they are now (committed or not), committed in a clean repository, so that
    pre-commit keys its environment on one revision and installs facesync once for all the runs."""
    files = git(ROOT, "ls-files", "-z", "--cached", "--others", "--exclude-standard").split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, where / name)
    git(where, "init", "-q")
    git(where, "add", "-A")
    git(where, "commit", "-q", "-m", "facesync")
    return where


def test_pre_commit_validates_a_manifest_when_its_fragment_or_photo_changes(tmp_path):
    """pre-commit itself (try-repo) on a repository holding a manifest with includes and photos."""
    hooks = this_working_tree_as_a_repository(tmp_path / "facesync")
    repo = tmp_path / "faces-repo"
    shutil.copytree(ROOT / "examples" / "company", repo / "library")
    (repo / "docs").mkdir()
    (repo / "docs" / "notes.md").write_text("notes\n")
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "library")
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"), "PRE_COMMIT_COLOR": "never",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def pre_commit(*args: str) -> subprocess.CompletedProcess:  # on the staged files, as `git commit` runs it
        return subprocess.run([tool("pre-commit"), *args, "--verbose"], check=False, cwd=repo,
                              capture_output=True, text=True, timeout=600, env=env)

    def commit_check() -> subprocess.CompletedProcess:
        """try-repo installs facesync into a new store on every call; `run` with the same revision reuses
        one environment, so facesync is installed twice in all, not once per check."""
        return pre_commit("run", "--config", str(config))

    (repo / "docs" / "notes.md").write_text("other notes\n")
    git(repo, "add", "docs/notes.md")
    unrelated = pre_commit("try-repo", str(hooks), "facesync-validate")
    config = tmp_path / "pre-commit-config.yaml"
    config.write_text(yaml.safe_dump({"repos": [{"repo": str(hooks), "rev": git(hooks, "rev-parse", "HEAD").strip(),
                                                 "hooks": [{"id": "facesync-validate"}]}]}))
    assert unrelated.returncode == 0, unrelated.stdout + unrelated.stderr
    assert "manifest OK" not in unrelated.stdout  # nothing in the manifest's folder changed: not validated
    git(repo, "commit", "-q", "-m", "notes")

    fragment = repo / "library" / "teams" / "sales.yaml"
    fragment.write_text(fragment.read_text().replace("images:", "imgs:", 1))
    git(repo, "add", "-A")
    broken_fragment = commit_check()
    assert broken_fragment.returncode == 1, broken_fragment.stdout
    assert "teams/sales.yaml" in broken_fragment.stdout and "unknown key 'imgs'" in broken_fragment.stdout
    git(repo, "checkout", "HEAD", "--", ".")

    (repo / "library" / "faces" / "ken.png").write_bytes(b"GIF89a" + bytes(64))  # a photo the manifest names
    git(repo, "add", "-A")
    broken_photo = commit_check()
    assert broken_photo.returncode == 1, broken_photo.stdout
    assert "ken.png" in broken_photo.stdout and "GIF" in broken_photo.stdout
    git(repo, "checkout", "HEAD", "--", ".")

    git(repo, "rm", "-q", "library/faces/oscar.png")  # only a deletion is staged
    deleted_photo = commit_check()
    assert deleted_photo.returncode == 1, deleted_photo.stdout
    assert "oscar.png" in deleted_photo.stdout
    git(repo, "reset", "-q", "--hard")

    (repo / "library" / "faces" / "mike.png").write_bytes((repo / "library" / "faces" / "ken.png").read_bytes())
    git(repo, "add", "-A")
    good_photo = commit_check()
    assert good_photo.returncode == 0, good_photo.stdout + good_photo.stderr
    assert "manifest OK: 3 groups" in good_photo.stdout


# ---- the GitLab helper, against a small stand-in for GitLab's notes and issues API -----------------

def gitlab_helper():
    spec = importlib.util.spec_from_file_location("facesync_gitlab", GITLAB_HELPER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeGitLab(BaseHTTPRequestHandler):
    """Keeps notes and issues of project 7 in memory; only the calls the helper makes."""

    notes: list[dict]
    issues: list[dict]
    tokens: list[str]
    listings: ClassVar[dict[str, list]] = {  # a merged MR !3 whose head abc123 had a failed, then a passed plan
        "/repository/commits/m3rg3/merge_requests": [{"iid": 3, "state": "merged", "sha": "abc123"}],
        "/repository/commits/d1r3ct/merge_requests": [],
        "/merge_requests/3/pipelines": [{"id": 11, "sha": "abc123", "status": "failed"},
                                        {"id": 12, "sha": "abc123", "status": "success"},
                                        {"id": 10, "sha": "0ld", "status": "success"}],
        "/pipelines/12/jobs": [{"id": 40, "name": "lint"}, {"id": 41, "name": "facesync:plan"}],
    }
    files: ClassVar[dict[str, bytes]] = {"/jobs/41/artifacts/plan.json": b'{"operations": []}',
                               "/jobs/41/artifacts/plan.md": b"No changes.",
                               "/jobs/41/artifacts/plan-inputs.sha256": b"f1ng3rpr1nt\n"}

    def log_message(self, *args):
        pass

    def _answer(self, payload) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _form(self) -> dict:
        from urllib.parse import parse_qs

        length = int(self.headers.get("Content-Length", 0))
        return {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}

    def do_GET(self):
        self.tokens.append(self.headers.get("PRIVATE-TOKEN"))
        if "/merge_requests/3/notes" in self.path:
            page = 1 if "page=1" in self.path else 2
            return self._answer(self.notes if page == 1 else [])
        if "/issues" in self.path:
            return self._answer([i for i in self.issues if i["state"] == "opened"][:1])
        path = self.path.split("?")[0].removeprefix("/api/v4/projects/7")
        if path in self.files:
            body = self.files[path]
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return self.wfile.write(body)
        if path in self.listings:
            return self._answer(self.listings[path] if "page=2" not in self.path else [])
        self.send_error(404)

    def do_POST(self):
        form = self._form()
        if self.path.endswith("/merge_requests/3/notes"):
            self.notes.append({"id": 100 + len(self.notes), "body": form["body"]})
            return self._answer(self.notes[-1])
        if self.path.endswith("/issues"):
            self.issues.append({"iid": len(self.issues) + 1, "state": "opened", **form})
            return self._answer(self.issues[-1])
        if "/notes" in self.path:
            return self._answer({"id": 1})
        self.send_error(404)

    def do_PUT(self):
        form = self._form()
        if "/notes/" in self.path:
            note = next(n for n in self.notes if self.path.endswith(f"/notes/{n['id']}"))
            note["body"] = form["body"]
            return self._answer(note)
        issue = next(i for i in self.issues if self.path.endswith(f"/issues/{i['iid']}"))
        if form.get("state_event") == "close":
            issue["state"] = "closed"
        issue.update({k: v for k, v in form.items() if k != "state_event"})
        self._answer(issue)


@pytest.fixture
def fake_gitlab():
    handler = type("Handler", (FakeGitLab,), {"notes": [{"id": 1, "body": "LGTM"}], "issues": [], "tokens": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield handler, f"http://127.0.0.1:{server.server_port}/api/v4"
    server.shutdown()
    server.server_close()


def test_gitlab_note_is_created_once_then_edited_in_place(fake_gitlab, tmp_path, monkeypatch, capsys):
    handler, url = fake_gitlab
    helper = gitlab_helper()
    for name, value in {"CI_API_V4_URL": url, "CI_PROJECT_ID": "7", "CI_MERGE_REQUEST_IID": "3",
                        "FACESYNC_GITLAB_TOKEN": "glpat-secret-token"}.items():
        monkeypatch.setenv(name, value)
    plan = tmp_path / "plan.md"

    plan.write_text("Plan: 1 to add")
    assert helper.main(["note", "### first", str(plan)]) == 0
    plan.write_text("Plan: 2 to add")
    assert helper.main(["note", "### second", str(plan)]) == 0

    marked = [note for note in handler.notes if note["body"].startswith("<!-- facesync-plan -->")]
    assert len(handler.notes) == 2 and len(marked) == 1
    assert "### second" in marked[0]["body"] and "Plan: 2 to add" in marked[0]["body"]
    assert set(handler.tokens) == {"glpat-secret-token"}
    assert "glpat-secret-token" not in capsys.readouterr().out


def test_gitlab_drift_issue_is_opened_updated_and_closed(fake_gitlab, tmp_path, monkeypatch):
    handler, url = fake_gitlab
    helper = gitlab_helper()
    monkeypatch.setenv("CI_API_V4_URL", url)
    monkeypatch.setenv("CI_PROJECT_ID", "7")
    monkeypatch.setenv("FACESYNC_GITLAB_TOKEN", "glpat-secret-token")
    plan = tmp_path / "drift.md"
    plan.write_text("Plan: 1 to destroy")

    assert helper.main(["drift", "2", str(plan)]) == 0
    assert helper.main(["drift", "3", str(plan)]) == 0
    assert [(i["state"], i["labels"]) for i in handler.issues] == [("opened", "facesync-drift")]
    assert "refused as unsafe" in handler.issues[0]["description"]
    assert helper.main(["drift", "0", str(plan)]) == 0
    assert handler.issues[0]["state"] == "closed"


def test_gitlab_apply_downloads_the_plan_reviewed_on_the_merged_mr(fake_gitlab, tmp_path, monkeypatch):
    _, url = fake_gitlab
    helper = gitlab_helper()
    for name, value in {"CI_API_V4_URL": url, "CI_PROJECT_ID": "7", "CI_COMMIT_SHA": "m3rg3",
                        "FACESYNC_GITLAB_TOKEN": "glpat-secret-token"}.items():
        monkeypatch.setenv(name, value)

    assert helper.main(["reviewed-plan", str(tmp_path / "reviewed")]) == 0
    assert (tmp_path / "reviewed" / "plan.json").read_bytes() == b'{"operations": []}'
    assert (tmp_path / "reviewed" / "plan-inputs.sha256").read_text() == "f1ng3rpr1nt\n"

    monkeypatch.setenv("CI_COMMIT_SHA", "d1r3ct")  # a direct push: no merge request, no reviewed plan
    assert helper.main(["reviewed-plan", str(tmp_path / "other")]) == 1
    assert not (tmp_path / "other").exists()


def test_gitlab_helper_picks_the_newest_successful_pipeline_of_the_reviewed_commit():
    helper = gitlab_helper()
    pipelines = [{"id": 5, "sha": "aaa", "status": "success"}, {"id": 9, "sha": "aaa", "status": "failed"},
                 {"id": 7, "sha": "aaa", "status": "success"}, {"id": 8, "sha": "bbb", "status": "success"}]

    assert helper.reviewed_pipeline(pipelines, "aaa")["id"] == 7
    assert helper.reviewed_pipeline(pipelines, "ccc") is None


# ---- the recipes' command lines, run in their order on a real local library ------------------------

def facesync_in(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "FACESYNC_TARGET": f"local:{tmp_path / 'library.db'}",
           "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    return run_facesync(*args, cwd=tmp_path, env=env)


@pytest.mark.skipif(not QUICKSTART.exists(), reason="no quick-start manifest yet")
def test_review_then_apply_the_reviewed_plan_then_no_drift(tmp_path):
    manifest = str(QUICKSTART)

    reviewed = facesync_in(tmp_path, "plan", manifest, "--format", "markdown", "--out", "plan.json",
                           "--detailed-exitcode")
    assert reviewed.returncode == 2, reviewed.stderr  # changes present: the comment shows them
    assert (tmp_path / "plan.json").exists()
    assert "alice" in reviewed.stdout and "{" not in reviewed.stdout.splitlines()[0]  # Markdown, not JSON

    applied = facesync_in(tmp_path, "apply", "plan.json", "--yes", "--report", "apply-report.json")
    assert applied.returncode == 0, applied.stderr
    assert json.loads((tmp_path / "apply-report.json").read_text())

    drift = facesync_in(tmp_path, "plan", manifest, "--format", "markdown", "--detailed-exitcode")
    assert drift.returncode == 0, drift.stderr

    again = facesync_in(tmp_path, "apply", "plan.json", "--yes")
    assert again.returncode == 1  # the reviewed plan no longer fits the library: refused, not re-run
    assert "Traceback" not in again.stderr


def plan_takes_live() -> bool:
    plan = cli.get_command(click.Context(cli), "plan")
    return plan is not None and "--live" in options_of(plan)


@pytest.mark.skipif(not QUICKSTART.exists(), reason="no quick-start manifest yet")
@pytest.mark.skipif(not plan_takes_live(), reason="plan --live not there yet")
def test_fork_without_credentials_plans_offline_from_the_drift_snapshot(tmp_path, serve):
    """The drift job snapshots the remote library; later a fork's job, with no secrets and the server
    out of reach, plans its changed manifest against that snapshot."""
    manifest = str(QUICKSTART)
    server = serve()
    with_secrets = {**server.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "main-cache")}
    for step in (["apply", manifest, "--yes", "--qps", "500"],
                 ["snapshot", manifest, "--out", "live.json", "--qps", "500"]):
        done = run_facesync(*step, cwd=tmp_path, env=with_secrets)
        assert done.returncode == 0, done.stderr
    server.stop()
    fork = tmp_path / "fork"
    shutil.copytree(QUICKSTART.parent, fork)
    (fork / "faceset.yaml").write_text(  # the fork's change: erin leaves
        QUICKSTART.read_text().replace("      erin:\n        images: [faces/erin.jpg]\n", ""))
    assert "erin:" not in (fork / "faceset.yaml").read_text()
    no_secrets = {key: value for key, value in server.env().items() if not key.startswith("BAIDU_")}

    def offline_plan(path: str) -> subprocess.CompletedProcess:
        return run_facesync("plan", path, "--live", "live.json", "--format", "markdown", "--out", "plan.json",
                            "--detailed-exitcode", cwd=tmp_path,
                            env={**no_secrets, "FACESYNC_CACHE_DIR": str(tmp_path / "fork-cache")})

    unchanged, changed = offline_plan(manifest), offline_plan(str(fork / "faceset.yaml"))

    assert unchanged.returncode == 0, unchanged.stderr
    assert changed.returncode == 2, changed.stderr
    assert re.search(r"\buser erin\b", changed.stdout), changed.stdout


# ---- the GitLab plan job, run as GitLab runs it, against a private project's artifacts API -----------

class PrivateArtifacts(BaseHTTPRequestHandler):
    """GitLab's "download a file of the latest successful job's artifacts" for a private project:
    without a valid JOB-TOKEN header it answers 404, as GitLab does to keep private projects unseen."""

    token = "job-token-123"
    files: ClassVar[dict[str, bytes]] = {}
    seen: ClassVar[list[tuple[str, str | None]]] = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        from urllib.parse import parse_qs, urlsplit

        url = urlsplit(self.path)
        self.seen.append((self.path, self.headers.get("JOB-TOKEN")))
        body = self.files.get(f"{url.path}?job={parse_qs(url.query).get('job', [''])[0]}")
        if body is None or self.headers.get("JOB-TOKEN") != self.token:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_gitlab_plan_job_without_keys_plans_from_the_private_snapshot_with_the_job_token(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(QUICKSTART.parent, repo)
    (repo / "ci").mkdir()
    shutil.copy2(GITLAB_HELPER, repo / "ci" / "facesync_gitlab.py")
    library = f"local:{tmp_path / 'live.db'}"
    made = [facesync_in(tmp_path, "apply", str(repo / "faceset.yaml"), "--yes", "--target", library),
            facesync_in(tmp_path, "snapshot", str(repo / "faceset.yaml"), "--out", str(tmp_path / "live.json"),
                        "--target", library)]
    assert [done.returncode for done in made] == [0, 0], [done.stderr for done in made]
    (repo / "faceset.yaml").write_text(  # the merge request's change: erin leaves
        (repo / "faceset.yaml").read_text().replace("      erin:\n        images: [faces/erin.jpg]\n", ""))
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "erin leaves")
    handler = type("Handler", (PrivateArtifacts,), {"seen": [], "files": {
        "/api/v4/projects/7/jobs/artifacts/main/raw/live.json?job=facesync:drift": (tmp_path / "live.json").read_bytes()}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    pipeline = load(GITLAB)
    job = pipeline["facesync:plan"]
    script = "\n".join(job["script"])  # GitLab runs the lines in one bash, stopping at the first failure
    variables = {name: str(value) for name, value in pipeline["variables"].items() if "$" not in str(value)}
    env = {key: value for key, value in os.environ.items() if not key.startswith(("BAIDU_", "FACESYNC_"))}
    env.update(variables, CI_API_V4_URL=f"http://127.0.0.1:{server.server_port}/api/v4", CI_DEFAULT_BRANCH="main",
               CI_MERGE_REQUEST_PROJECT_ID="7", CI_PROJECT_ID="7", CI_COMMIT_SHORT_SHA="abc1234",
               CI_JOB_URL="https://gitlab.example.com/job/1", FACESYNC_CACHE_DIR=str(tmp_path / "cache"),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")

    def run_job(token: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", script], check=False, cwd=repo,
                              capture_output=True, text=True, timeout=120, env={**env, "CI_JOB_TOKEN": token})

    try:
        planned = run_job(PrivateArtifacts.token)
        plan_md = (repo / "plan.md").read_text() if (repo / "plan.md").exists() else ""
        for name in ("plan.md", "plan.json", "plan-inputs.sha256", "live.json"):
            (repo / name).unlink(missing_ok=True)
        refused = run_job("a-token-of-another-project")
    finally:
        server.shutdown()
        server.server_close()

    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "planning offline" in planned.stdout and re.search(r"\buser erin\b", plan_md), planned.stdout
    assert handler.seen[0][1] == PrivateArtifacts.token  # the snapshot came through the API with the job token
    assert refused.returncode == 0 and "No live snapshot could be downloaded" in refused.stdout
    assert not (repo / "plan.md").exists()
