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

import functools
import json
import os
import sys
from dataclasses import replace

import click

from facesync import apply as executor
from facesync import metrics
from facesync import progress as progress_bars
from facesync.api.errors import AuthError, FaceExistsError, QuotaExhaustedError, kind_of
from facesync.apply.report import Verification, verification
from facesync.commands.options import (
    concurrency_option,
    group_option,
    no_color_option,
    qps_option,
    target_option,
    use_color,
    user_option,
)
from facesync.errors import (
    EXIT_OK,
    ApplyFailedError,
    ConfigError,
    FacesyncError,
    PlanRefusedError,
    PlanStaleError,
)
from facesync.files import write_atomically
from facesync.lock import library_lock
from facesync.logs import redact
from facesync.model import Desired, ImageKind
from facesync.plan.ops import Plan
from facesync.targets import TargetSpec, choose_target, open_target, parse_target
from facesync.words import counted

SHOWN_FAILURES = 20


@click.command("apply")
@click.argument("source", metavar="MANIFEST|PLAN.json", type=click.Path(dir_okay=False))
@target_option
@click.option("--yes", "-y", "yes", is_flag=True, help="Do not ask for confirmation (for scripts and CI).")
@click.option("--force", is_flag=True, help="Apply a plan that deletes more than the policy's safe share.")
@qps_option
@concurrency_option
@click.option("--report", "report_path", metavar="FILE", type=click.Path(dir_okay=False), default=None,
              help="Write every operation's outcome, error and log_id, and the totals, as JSON.")
@group_option("Apply")
@user_option("Apply")
@click.option("--verify", type=click.Choice(executor.VERIFY_MODES), default="quick", show_default=True,
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
def command(ctx: click.Context, source: str, target: str | None, yes: bool, force: bool, qps: float | None,
            concurrency: int, report_path: str | None, groups: tuple[str, ...], users: tuple[str, ...],
            verify: str, lock_timeout: float, break_lock: bool, chdir: str | None, no_color: bool) -> int:
    """Make the library match MANIFEST (asks first), or apply a saved PLAN.json exactly.

    \b
    Examples:
      facesync apply faceset.yaml                      # plan, show, ask, apply, verify
      facesync apply faceset.yaml --yes --report report.json
      facesync plan faceset.yaml --out plan.json && facesync apply plan.json
    """
    options = _Options(force=force, yes=yes, concurrency=concurrency, report_path=report_path, verify=verify,
                       lock_timeout=lock_timeout, break_lock=break_lock, color=use_color(no_color),
                       quiet=(ctx.obj or {}).get("verbosity", 0) < 0, chdir=chdir)
    text = _plan_text(source)
    if text is None and chdir:
        raise ConfigError("--chdir goes with a saved PLAN.json only",
                          hint="a manifest's image paths are relative to the manifest itself")
    if text is not None:
        if groups or users:
            raise ConfigError("--group and --user cannot narrow a saved plan: it is applied exactly",
                              hint="make a narrowed plan with facesync plan --group/--user --out PLAN.json")
        return _apply_plan_file(text, target, qps, options)
    return _apply_manifest(source, target, qps, groups, users, options)


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


# ---- the two inputs --------------------------------------------------------------------------------


def _apply_manifest(path: str, target: str | None, qps: float | None, groups: tuple[str, ...],
                    users: tuple[str, ...], options: _Options) -> int:
    from facesync.workflow import close_library, estimate_qps, load_desired, open_cache, plan_desired

    desired, _warnings = load_desired(path, groups=groups, users=users, opens_target=True, target=target)
    spec = choose_target(target, desired.target)
    library = open_target(spec, qps=qps, concurrency=options.concurrency)
    try:
        with library_lock(spec, library, timeout=options.lock_timeout, break_lock=options.break_lock):
            cache = open_cache(library)
            try:
                _resolved, _live, plan, _stats = plan_desired(
                    desired, library, cache, qps=estimate_qps(spec, qps), concurrency=options.concurrency,
                    force=options.force)
                _show(plan, options)
                if plan.empty:
                    return EXIT_OK
                _refuse_unsafe(plan, options)
                _confirm(options)
                return _run(plan, library, cache, spec, options, desired.policy.protected_groups)
            finally:
                cache.close()
    finally:
        close_library(library)


def _apply_plan_file(text: str, target: str | None, qps: float | None, options: _Options) -> int:
    from facesync.plan import planfile, trust
    from facesync.workflow import close_library, open_cache

    plan = planfile.load_plan(text)
    plan, desired = _find_files(plan, options.chdir)
    spec = _plan_target(plan, target)
    library = open_target(spec, qps=qps, concurrency=options.concurrency)
    try:
        if plan.target and plan.target != library.identity:
            raise PlanStaleError(
                f"this plan was made for {plan.target}, not for {library.identity}",
                hint="apply it to the library it was made for (--target), or make a new plan for this one",
            )
        with library_lock(spec, library, timeout=options.lock_timeout, break_lock=options.break_lock):
            moved = executor.stale_facts(plan, library, concurrency=options.concurrency)
            if moved:
                shown = "\n".join(f"  - {line}" for line in moved[:50])
                more = f"\n  ... and {len(moved) - 50} more" if len(moved) > 50 else ""
                raise PlanStaleError(f"the library has changed since this plan was made:\n{shown}{more}",
                                     hint="make a new plan (facesync plan MANIFEST --out PLAN.json) and review it")
            live_users = trust.read_scope(plan, desired, library, concurrency=options.concurrency)
            plan = replace(plan, safety=trust.recount_safety(plan, live_users, desired, force=options.force))
            _show(plan, options)
            if plan.empty:
                return EXIT_OK
            _refuse_unsafe(plan, options)
            cache = open_cache(library)
            try:
                return _run(plan, library, cache, spec, options, trust.protected_groups(plan, desired))
            finally:
                cache.close()
    finally:
        close_library(library)


def _find_files(plan: Plan, chdir: str | None) -> tuple[Plan, Desired | None]:
    """The plan with its images found (and checked) in this checkout, then the manifest beside them when
    it is there; refuses, before anything is opened or written, when an image is missing or differs."""
    from facesync import manifest
    from facesync.cache import FileHashes
    from facesync.checkout import apply_roots
    from facesync.plan import planfile
    from facesync.plan.uploads import bind, find_checkout
    from facesync.workflow import file_hasher

    @functools.lru_cache(maxsize=2)  # the folder the plan was made in is read once to check its digest
    def load(path: str) -> Desired:
        return manifest.load(path, hash_images=False).desired

    found = find_checkout(plan, apply_roots(chdir, plan.planned_in), lambda path: load(path).digest)
    if any(op.face is not None and op.face.kind is ImageKind.FILE for op in plan.operations):
        click.echo(f"Images: paths in the plan are relative to {found.base}, the manifest's folder in "
                   f"{found.root.describe()}.", err=True)
    hashes = FileHashes.default()
    try:
        plan = bind(plan, found.base, file_hasher(hashes))
    finally:
        hashes.close()
    library = planfile.local_target_in(plan.target, plan.planned_in, found.root.path)
    if library is not None:
        if not found.manifest:
            raise ConfigError(f"the plan's library {library[1]} is relative to the folder it was made in, and "
                              "no folder here holds the plan's manifest",
                              hint="apply in a checkout of that folder (or --chdir DIR), or pass --target")
        click.echo(f"Library: {library[0]}, the plan's {library[1]} in {found.root.describe()}.", err=True)
        plan = replace(plan, target=library[0])
    return plan, load(found.manifest) if found.manifest else None


def _plan_target(plan: Plan, flag: str | None) -> TargetSpec:
    """--target, FACESYNC_TARGET, else the library the plan names (its identity starts with the target),
    if that is a local library or Baidu: a plan file is text anyone may have edited, so it never sends
    credentials to a server nobody chose outside it."""
    if flag or os.environ.get("FACESYNC_TARGET"):
        return choose_target(flag)
    recorded = (plan.target or "").split(" ")[0]
    if not recorded:
        raise ConfigError("the plan names no target", hint="pass --target")
    spec = parse_target(recorded)
    if not (spec.is_local or spec.is_baidu):
        shown = recorded if recorded.isprintable() else repr(recorded)
        raise ConfigError(f"the plan names the target {shown}: facesync sends credentials only to Baidu or "
                          "to a server chosen outside the plan file",
                          hint=f"if you trust that server, choose it yourself: --target {shown} "
                               f"(or FACESYNC_TARGET={shown})")
    return spec


# ---- the steps -------------------------------------------------------------------------------------


def _show(plan: Plan, options: _Options) -> None:
    from facesync.plan.render import render_text

    metrics.observe_plan(plan)
    text = render_text(plan, color=options.color)
    click.echo(text, nl=not text.endswith("\n"))


def _refuse_unsafe(plan: Plan, options: _Options) -> None:
    if plan.safety.unsafe and not options.force:
        raise PlanRefusedError(
            "refusing an unsafe plan: " + "; ".join(plan.safety.reasons),
            hint="check that the manifest is complete; if these deletions are wanted, pass --force",
        )


def _confirm(options: _Options) -> None:
    if options.yes:
        return
    if not sys.stdin.isatty():
        raise FacesyncError(
            "refusing to apply without confirmation: standard input is not a terminal",
            hint="review the plan above, then pass --yes (or save it with facesync plan --out PLAN.json "
                 "and apply that file)",
        )
    click.echo("\nApply these changes? Only 'yes' will be accepted to approve.")
    answer = click.prompt("  Enter a value", default="", show_default=False, prompt_suffix=": ")
    if answer.strip() != "yes":
        raise FacesyncError("Apply cancelled: nothing was changed.")


def _run(plan: Plan, library, cache, spec: TargetSpec, options: _Options, protected) -> int:
    total = len(plan.operations)
    every = max(10, min(100, total // 10))
    seen = {"n": 0, "failed": 0}

    with progress_bars.progress("Applying", total=total) as bar:
        def on_result(result: executor.OpResult) -> None:
            seen["n"] += 1
            if result.outcome == executor.FAILED:
                seen["failed"] += 1
                if not options.quiet:
                    click.echo(f"apply: FAILED {_describe(result)}", err=True)
            if not bar.visible and not options.quiet and (seen["n"] % every == 0 or seen["n"] == total):
                click.echo(f"apply: {seen['n']}/{total} operations ({seen['failed']} failed)", err=True)

        result = executor.execute(plan, library, concurrency=options.concurrency, progress=bar,
                                  on_result=on_result, cache=cache, protected_groups=protected,
                                  verify=options.verify)
    metrics.observe_apply(result)
    if options.report_path:
        report = executor.report_dict(result, target=library.identity, plan=plan, verify=options.verify)
        write_atomically(options.report_path, json.dumps(report, indent=2, ensure_ascii=False) + "\n",
                         what="report")
    _summarise(result, options.verify)
    if result.interrupted:
        raise KeyboardInterrupt
    if result.stopped:
        raise ApplyFailedError(f"apply stopped before the end: {result.stopped}",
                               hint=_stop_hint(result))
    if not result.ok:
        parts = []
        if result.count(executor.FAILED):
            parts.append(f"{counted(result.count(executor.FAILED), 'operation')} failed")
        if result.count(executor.SKIPPED):
            parts.append(f"{result.count(executor.SKIPPED)} skipped")
        if result.problems:
            parts.append(f"verification found {counted(len(result.problems), 'problem')}")
        raise ApplyFailedError("apply incomplete: " + ", ".join(parts),
                               hint="fix the causes above and run apply again: done work is not redone")
    return EXIT_OK


def _describe(result: executor.OpResult) -> str:
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


def _summarise(result: executor.ApplyResult, verify: str) -> None:
    rate = result.calls / result.duration_s if result.duration_s > 0 else 0.0
    click.echo(f"\nApply {'complete' if result.ok else 'finished with problems'}: "
               f"{result.count(executor.DONE)} done, {result.count(executor.ALREADY)} already done, "
               f"{result.count(executor.FAILED)} failed, {result.count(executor.SKIPPED)} skipped "
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


def _say_what_was_verified(checked: Verification, result: executor.ApplyResult) -> None:
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


def _stop_hint(result: executor.ApplyResult) -> str:
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
