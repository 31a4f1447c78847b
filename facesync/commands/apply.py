"""``facesync apply``: make the library match a manifest, or apply exactly a reviewed plan file.

The order, and why: lock the library first (so the plan is made against a library no other apply is
changing), plan, show the plan, refuse an unsafe plan (exit 3) unless ``--force``, ask for "yes" (a
manifest only: a plan file was reviewed already, as with ``terraform apply PLAN``), run, verify, report.

- ``MANIFEST|PLAN.json`` is told apart by content: a JSON object with ``format_version`` is a plan file.
- A plan file is applied exactly: its checksum must hold; its image files are found under the
  manifest's folder in this checkout (``--chdir DIR``, else the git checkout around the working folder,
  else the working folder; stderr says which) and must have the content that was planned, before
  anything is opened; the library it was made for must be the one opened (target: ``--target``,
  ``FACESYNC_TARGET``, else the plan's own; a local library saved relative to the folder the plan was
  made in is the one in this checkout, and stderr says which); and every live fact it was planned on
  must still hold.
  Otherwise it is refused (exit 1) naming each image or fact. ``--group``/``--user`` cannot narrow a
  reviewed plan and are refused with one.
- What can be recomputed is not taken from the file (``plan/trust.py``): safety is counted again from
  the operations and the library, protected groups come from the manifest too when it is there, and
  only ``--force`` given here passes an unsafe plan.
- No terminal on stdin and no ``--yes``: refused after the plan is shown (exit 1).
- Progress: a bar on a terminal; otherwise a plain line every tenth of the work (every 10 to 100
  operations) and one per failure, on stderr. ``-q`` hides them. ``--report FILE`` is written
  atomically, also when the run fails or is interrupted.
- Exit: 0 when every operation is done and verification agrees; 1 otherwise (the summary says what);
  3 for an unsafe plan without ``--force``; 130 on Ctrl-C (the lock is released, the report written).
"""

from __future__ import annotations

import json
import sys

import click

from facesync import metrics
from facesync import progress as progress_bars
from facesync.api.errors import AuthError, FaceExistsError, QuotaExhaustedError, kind_of
from facesync.apply import VERIFY_MODES
from facesync.apply.report import Verification, verification
from facesync.apply.results import ALREADY, DONE, FAILED, SKIPPED, ApplyResult, OpResult
from facesync.commands.options import (
    concurrency_option,
    group_option,
    no_color_option,
    qps_option,
    refresh_options,
    reupload_option,
    target_option,
    use_color,
    user_option,
)
from facesync.errors import EXIT_OK, ApplyFailedError, ConfigError, FacesyncError
from facesync.logs import redact
from facesync.plan.ops import Plan
from facesync.session import Session, load_plan_file
from facesync.words import counted

SHOWN_FAILURES = 20


@click.command("apply")
@click.argument("source", metavar="MANIFEST|PLAN.json", type=click.Path(dir_okay=False))
@target_option
@click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation (for scripts and CI).")
@click.option("--force", is_flag=True, help="Apply a plan that deletes more than the policy's safe share.")
@reupload_option
@qps_option
@concurrency_option
@refresh_options
@click.option("--report", "report_path", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="Write every operation's outcome, error and log_id, and the totals, as JSON.")
@group_option("Apply")
@user_option("Apply")
@click.option("--verify", type=click.Choice(VERIFY_MODES), default="quick", show_default=True,
              help="Read back afterwards: quick, what the answers leave in doubt; full, every touched user.")
@click.option("--lock-timeout", type=click.FloatRange(min=0), default=0.0, show_default=True, metavar="SECONDS",
              help="Wait up to SECONDS for another apply's lock on the library.")
@click.option("--break-lock", is_flag=True, help="Remove a dead apply's lock on a remote library first.")
@click.option("--chdir", "chdir", metavar="DIR", type=click.Path(file_okay=False, exists=True), default=None,
              help="PLAN.json only: the checkout its image paths are relative to (default: the git checkout "
                   "around the working folder, else the working folder).")
@no_color_option
@metrics.metrics_option("apply", source_param="source")
@click.pass_context
def command(ctx: click.Context, source: str, target: str | None, yes: bool, force: bool, reupload: bool,
            qps: float | None, concurrency: int, refresh: str | None, state_file: str | None, audit: int | None,
            report_path: str | None, groups: tuple[str, ...], users: tuple[str, ...],
            verify: str, lock_timeout: float, break_lock: bool, chdir: str | None, no_color: bool) -> int:
    """Make the library match MANIFEST (asks first), or apply a saved PLAN.json exactly.

    \b
    Examples:
      facesync apply faceset.yaml                      # plan, show, ask, apply, verify
      facesync apply faceset.yaml --yes --report report.json
      facesync plan faceset.yaml --out plan.json && facesync apply plan.json
    """
    options = _Options(force=force, reupload=reupload, yes=yes, concurrency=concurrency, report_path=report_path,
                       verify=verify, lock_timeout=lock_timeout, break_lock=break_lock, color=use_color(no_color),
                       quiet=(ctx.obj or {}).get("verbosity", 0) < 0, chdir=chdir)
    text = _plan_text(source)
    if text is None and chdir:
        raise ConfigError("--chdir goes with a saved PLAN.json only",
                          hint="a manifest's image paths are relative to the manifest itself")
    if text is not None:
        if groups or users:
            raise ConfigError("--group and --user cannot narrow a saved plan: it is applied exactly",
                              hint="make a narrowed plan with facesync plan --group/--user --out PLAN.json")
        if refresh or audit is not None:
            raise ConfigError("--refresh and --audit go with a manifest: a saved plan reads no library to plan",
                              hint="apply PLAN.json checks every fact its operations depend on against the library")
        saved = load_plan_file(text, chdir=chdir)
        for notice in saved.notices:
            click.echo(notice, err=True)
        with Session.for_plan(saved, target, qps=qps, concurrency=concurrency, state=state_file) as session:
            return _apply(session, None, options)
    with Session.for_manifest(source, target, groups=groups, users=users, qps=qps, concurrency=concurrency,
                              refresh=refresh, state=state_file, audit=audit) as session:
        return _apply(session, session.manifest, options)


class _Options:
    def __init__(self, **values):
        self.__dict__.update(values)


def _plan_text(path: str) -> str | None:
    """The file's text when it is a plan file (a JSON object with format_version), else None."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(1)
            while head in (b" ", b"\n", b"\r", b"\t", b"\xef", b"\xbb", b"\xbf"):
                head = handle.read(1)
            if head != b"{":
                return None
            handle.seek(0)
            text = handle.read().decode("utf-8-sig")
    except OSError as error:
        raise ConfigError(f"cannot read {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return text if isinstance(data, dict) and "format_version" in data else None


def _apply(session: Session, source, options: _Options) -> int:
    """Apply ``source`` (a manifest's path, or None: the session's saved plan), showing and reporting."""
    total = {"n": 0, "seen": 0, "failed": 0}
    plain = not options.quiet and not progress_bars.wanted()  # no bar: a line every tenth of the work

    def show(plan: Plan) -> None:
        from facesync.plan.render import render_text

        total["n"] = len(plan.operations)
        metrics.observe_plan(plan)
        text = render_text(plan, color=options.color)
        click.echo(text, nl=not text.endswith("\n"))

    def on_result(result: OpResult) -> None:
        total["seen"] += 1
        if result.outcome == FAILED:
            total["failed"] += 1
            if not options.quiet:
                click.echo(f"apply: FAILED {_describe(result)}", err=True)
        every = max(10, min(100, total["n"] // 10))
        if plain and (total["seen"] % every == 0 or total["seen"] == total["n"]):
            click.echo(f"apply: {total['seen']}/{total['n']} operations ({total['failed']} failed)", err=True)

    result = session.apply(source, force=options.force, reupload=options.reupload, verify=options.verify,
                           lock_timeout=options.lock_timeout, break_lock=options.break_lock, on_plan=show,
                           confirm=None if source is None else _confirm(options), on_result=on_result,
                           report=options.report_path)
    if result.plan is None or result.plan.empty:
        return EXIT_OK
    metrics.observe_apply(result)
    _summarise(result, options.verify)
    if result.interrupted:
        raise KeyboardInterrupt
    if result.stopped:
        raise ApplyFailedError(f"apply stopped before the end: {result.stopped}",
                               hint=_stop_hint(result))
    if not result.ok:
        parts = []
        if result.count(FAILED):
            parts.append(f"{counted(result.count(FAILED), 'operation')} failed")
        if result.count(SKIPPED):
            parts.append(f"{result.count(SKIPPED)} skipped")
        if result.problems:
            parts.append(f"verification found {counted(len(result.problems), 'problem')}")
        raise ApplyFailedError("apply incomplete: " + ", ".join(parts),
                               hint="fix the causes above and run apply again: done work is not redone")
    return EXIT_OK


def _confirm(options: _Options):
    """Ask for 'yes' on a terminal (not with --yes); refuse without one."""
    def confirm(plan: Plan) -> bool:
        if options.yes:
            return True
        if not sys.stdin.isatty():
            raise FacesyncError(
                "refusing to apply without confirmation: standard input is not a terminal",
                hint="review the plan above, then pass --yes (or save it with facesync plan --out PLAN.json "
                     "and apply that file)",
            )
        click.echo("\nApply these changes? Only 'yes' will be accepted to approve.")
        answer = click.prompt("  Enter a value", default="", show_default=False, prompt_suffix=": ")
        return answer.strip() == "yes"

    return confirm


def _describe(result: OpResult) -> str:
    op = result.operation
    where = f"{op.group_id}/{op.user_id}" if op.user_id is not None else op.group_id
    subject = ""
    if op.face is not None:
        subject = f" ({op.face.source})"
    elif op.face_token:
        subject = f" ({op.face_token})"
    text = f"{op.kind.value} {where}{subject}: {result.error_msg or result.outcome}"
    if result.log_id is not None and "log_id" not in text:
        text += f", log_id {result.log_id}"
    return redact(text)


def _summarise(result: ApplyResult, verify: str) -> None:
    rate = result.calls / result.duration_s if result.duration_s > 0 else 0.0
    click.echo(f"\nApply {'complete' if result.ok else 'finished with problems'}: "
               f"{result.count(DONE)} done, {result.count(ALREADY)} already done, "
               f"{result.count(FAILED)} failed, {result.count(SKIPPED)} skipped "
               f"({counted(len(result.results), 'operation')}, {counted(result.calls, 'call')} in {result.duration_s:.1f} s, "
               f"{rate:.1f} calls/s).")
    failures = result.failures
    if failures:
        click.echo("Failed:")
        for failure in failures[:SHOWN_FAILURES]:
            click.echo(f"  - {_describe(failure)}")
        if len(failures) > SHOWN_FAILURES:
            click.echo(f"  ... and {len(failures) - SHOWN_FAILURES} more (see --report)")
    _say_what_was_verified(verification(result, verify), result)


def _say_what_was_verified(checked: Verification, result: ApplyResult) -> None:
    """Never "verified" about the whole plan unless every operation ran and the read-back agrees."""
    reads = f"{counted(result.verify_calls, 'read')} in {result.verify_s:.1f} s"
    if checked.problems:
        click.echo(f"Verification: the library differs from the plan in {counted(len(checked.problems), 'way')}:")
        for problem in checked.problems[:SHOWN_FAILURES]:
            click.echo(f"  - {problem}")
        if len(checked.problems) > SHOWN_FAILURES:
            click.echo(f"  ... and {len(checked.problems) - SHOWN_FAILURES} more (see --report)")
    elif checked.whole_plan:
        click.echo(f"Verified: the library holds what the plan wanted ({reads}).")
    elif checked.ran:
        click.echo(f"Verified: what the operations that succeeded did ({reads}).")
    if checked.unverified:
        shown = ", ".join(checked.unverified[:SHOWN_FAILURES])
        left = len(checked.unverified) - SHOWN_FAILURES
        more = f" and {left} more" if left > 0 else ""
        click.echo(f"Not verified, and not as the plan wants ({len(checked.unverified)} with a failed or skipped "
                   f"operation): {shown}{more}. Run apply again once the causes are fixed.")
    if not checked.ran:
        click.echo(f"Not verified: {checked.reason}; nothing was read back.")


def _stop_hint(result: ApplyResult) -> str:
    for failure in result.failures:
        kind = kind_of(failure.error_code or 0)
        if issubclass(kind, QuotaExhaustedError):
            return "the app's request quota is used up; run apply again once it is renewed"
        if issubclass(kind, AuthError):
            return "check BAIDU_API_KEY, BAIDU_SECRET_KEY and the app's permissions, then run apply again"
        if issubclass(kind, FaceExistsError):  # harsh unknowns: the face is on another user of the group
            return ("running apply again fails the same way: if the manifest lists this photo for two users of "
                    "one group (`facesync validate` warns where), keep it on one of them, then run apply")
    return "run apply again: done work is not redone"
