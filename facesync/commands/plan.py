"""``facesync plan``: what apply would do, without changing anything.

Exit codes follow Terraform's ``plan -detailed-exitcode``: without the flag, 0 whenever the plan was
made (changes or not, safe or not); with it, 0 no changes, 2 changes, and 3 when the plan has changes
that ``apply`` would refuse as unsafe without ``--force`` (so a scheduled drift check can tell "needs
a review" from "routine changes"). 1 is always an error. An unsafe plan is also announced on stderr.

``--out`` writes the JSON plan file whatever ``--format`` shows, atomically (a temporary file in the
same folder, then a rename): a crash or a full disk never leaves a partial plan for ``apply`` to read.
"""

from __future__ import annotations

import logging

import click

from facesync import metrics
from facesync.commands.options import (
    concurrency_option,
    format_option,
    group_option,
    no_color_option,
    qps_option,
    refresh_options,
    reupload_option,
    target_option,
    use_color,
    user_option,
)
from facesync.errors import EXIT_CHANGES, EXIT_OK, EXIT_UNSAFE, ConfigError
from facesync.plan import planfile
from facesync.plan.ops import Plan
from facesync.plan.render import render
from facesync.session import Session

log = logging.getLogger(__name__)


def exit_code(plan: Plan, detailed: bool) -> int:
    if not detailed or plan.empty:
        return EXIT_OK
    if plan.refusal() is not None:
        return EXIT_UNSAFE
    return EXIT_CHANGES


@click.command("plan")
@click.argument("manifest_path", metavar="MANIFEST", type=click.Path(dir_okay=False))
@target_option
@format_option
@click.option("--out", "-o", "out", metavar="PLAN.json", type=click.Path(dir_okay=False), default=None,
              help="Also save the plan as JSON, for `facesync apply PLAN.json` (whatever --format shows).")
@click.option("--detailed-exitcode", is_flag=True,
              help="Exit 0 no changes, 2 changes, 3 changes that apply would refuse as unsafe.")
@click.option("--live", "live_path", metavar="SNAPSHOT.json", type=click.Path(dir_okay=False), default=None,
              help="Plan against a snapshot (facesync snapshot --out FILE): no network, no credentials.")
@group_option("Plan")
@user_option("Plan")
@qps_option
@concurrency_option
@refresh_options
@reupload_option
@no_color_option
@metrics.metrics_option("plan", source_param="manifest_path")
@click.option("--check-faces", is_flag=True,
              help="First look for one large-enough face in every photo (the 'faces' extra); see validate.")
@click.option("--strict", is_flag=True, help="With --check-faces: a face problem stops the plan.")
def command(manifest_path: str, target: str | None, fmt: str, out: str | None, detailed_exitcode: bool,
            live_path: str | None, groups: tuple[str, ...], users: tuple[str, ...], qps: float | None,
            concurrency: int, refresh: str | None, state_file: str | None, audit: int | None, reupload: bool,
            no_color: bool, check_faces: bool, strict: bool) -> int:
    """Show the calls that would make the library match MANIFEST. Changes nothing.

    \b
    Examples:
      facesync plan faceset.yaml
      facesync plan faceset.yaml --target baidu --format markdown --out plan.json
      facesync plan faceset.yaml --detailed-exitcode     # 0 in sync, 2 drift
      facesync plan faceset.yaml --live live.json         # offline, from a snapshot
      facesync plan faceset.yaml --check-faces --strict   # refuse photos without one clear face
    """
    if strict and not check_faces:
        raise click.UsageError("--strict applies to --check-faces: add --check-faces")
    if check_faces:
        from facesync.faces.check import check_manifest

        check_manifest(manifest_path, strict=strict, groups=groups, users=users)
    if live_path:
        if target:
            raise ConfigError("--target and --live do not go together",
                              hint="a snapshot plan is always for the library the snapshot was taken of")
        if refresh or state_file or audit is not None:
            raise ConfigError("--refresh, --state and --audit do not go with --live",
                              hint="a plan against a snapshot reads no library: the snapshot is its live state")
        with Session.offline(live_path) as session:
            plan = session.plan(manifest_path, groups=groups, users=users, qps=qps, reupload=reupload)
    else:
        with Session.for_manifest(manifest_path, target, groups=groups, users=users, qps=qps,
                                  concurrency=concurrency, if_missing="empty", refresh=refresh, state=state_file,
                                  audit=audit) as session:
            plan = session.plan(reupload=reupload)
    metrics.observe_plan(plan)
    text = render(plan, fmt, color=use_color(no_color))
    click.echo(text, nl=not text.endswith("\n"))
    if out:
        planfile.write_plan(plan, out)
        where = (f"; its image paths are relative to the folder of {plan.manifest} in {plan.planned_in}"
                 if plan.manifest else "")
        click.echo(f"Saved the plan to {out}{where}. Apply exactly it with: facesync apply {out}", err=True)
    if plan.refusal() is not None and fmt != "text":  # the text plan says it already
        log.warning("this plan is unsafe (%s): apply will refuse it without --force",
                    "; ".join(plan.safety.reasons))
    return exit_code(plan, detailed_exitcode)
