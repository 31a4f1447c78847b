"""--metrics-file: plan and apply leave Prometheus text for node_exporter's textfile collector, replaced
atomically, with what the run did (read back with prometheus_client's own parser)."""

from __future__ import annotations

import os
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.cli import run_facesync as facesync

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "examples" / "quickstart" / "faceset.yaml"


def samples(path: Path) -> dict[tuple, float]:
    """{(name, ((label, value), ...) without command/source): value}"""
    found = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("command", "source")))
            found[(sample.name, labels)] = sample.value
    return found


def test_plan_then_apply_over_http_report_drift_operations_calls_and_errors(tmp_path, serve):
    faults = tmp_path / "faults.yaml"  # every second user/add answers 18 first: retried, then done
    faults.write_text("seed: 1\nfaults:\n  - kind: error\n    rate: 0.5\n    codes: [18]\n"
                      "    endpoints: [faceset/user/add]\n")
    server = serve("--faults", str(faults))
    env = {**server.env(), "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}
    prom = tmp_path / "facesync.prom"

    planned = facesync("plan", str(QUICKSTART), "--detailed-exitcode", "--metrics-file", str(prom), env=env,
                       cwd=tmp_path)
    assert planned.returncode == 2, planned.stderr
    plan = samples(prom)
    assert plan[("facesync_last_run_success", ())] == 1  # changes present is not a failure
    assert plan[("facesync_last_run_exit_code", ())] == 2
    assert plan[("facesync_changes_pending", ())] == 9 == sum(
        value for (name, _), value in plan.items() if name == "facesync_operations")
    assert plan[("facesync_operations", (("kind", "add_face"), ("outcome", "planned")))] == 7
    assert plan[("facesync_api_calls", (("endpoint", "faceset/group/getlist"),))] == 1
    assert plan[("facesync_plan_unsafe", ())] == 0
    assert 'command="plan"' in prom.read_text() and f'source="{QUICKSTART}"' in prom.read_text()

    server.reset()
    applied = facesync("apply", str(QUICKSTART), "--yes", "--metrics-file", str(prom), env=env, cwd=tmp_path)
    assert applied.returncode == 0, applied.stderr
    done = samples(prom)
    assert done[("facesync_last_run_success", ())] == 1 and done[("facesync_changes_pending", ())] == 0
    assert done[("facesync_operations", (("kind", "add_face"), ("outcome", "done")))] == 7
    assert done[("facesync_operations", (("kind", "create_group"), ("outcome", "done")))] == 2
    seen = server.stats()  # what the server answered during the apply, retries included
    calls = {labels[0][1]: value for (name, labels), value in done.items() if name == "facesync_api_calls"}
    errors = {labels[0][1]: value for (name, labels), value in done.items() if name == "facesync_api_errors"}
    assert calls == {endpoint: float(n) for endpoint, n in seen["counters"].items()}
    assert errors == {str(code): float(n) for code, n in seen["errors"].items()} and errors["18"] >= 1
    assert os.listdir(tmp_path).count("facesync.prom") == 1
    assert not [name for name in os.listdir(tmp_path) if name.startswith("facesync.prom.")]  # no temporary left


def test_a_failed_run_says_so_and_keeps_the_last_success_time(tmp_path):
    env = {**os.environ, "FACESYNC_CACHE_DIR": str(tmp_path / "cache"),
           "FACESYNC_TARGET": f"local:{tmp_path / 'library.db'}"}
    prom = tmp_path / "facesync.prom"
    good = facesync("plan", str(QUICKSTART), "--metrics-file", str(prom), env=env, cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    succeeded_at = samples(prom)[("facesync_last_success_timestamp_seconds", ())]

    bad = facesync("plan", str(QUICKSTART), "--metrics-file", str(prom), "--target", "http://127.0.0.1:9",
                   env={**env, "BAIDU_API_KEY": "k", "BAIDU_SECRET_KEY": "s"}, cwd=tmp_path)

    assert bad.returncode == 1
    failed = samples(prom)
    assert failed[("facesync_last_run_success", ())] == 0 and failed[("facesync_last_run_exit_code", ())] == 1
    assert failed[("facesync_last_success_timestamp_seconds", ())] == succeeded_at
    assert failed[("facesync_last_run_timestamp_seconds", ())] > succeeded_at
    assert ("facesync_changes_pending", ()) not in failed  # no plan was made: drift unknown, not 0


def test_an_unwritable_metrics_file_is_refused_before_anything_runs(tmp_path):
    env = {**os.environ, "FACESYNC_TARGET": f"local:{tmp_path / 'library.db'}",
           "FACESYNC_CACHE_DIR": str(tmp_path / "cache")}

    done = facesync("apply", str(QUICKSTART), "--yes", "--metrics-file", str(tmp_path / "no" / "x.prom"),
                    env=env, cwd=tmp_path)

    assert done.returncode == 1 and "--metrics-file" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "library.db").exists()


def test_the_example_alert_rules_use_the_metrics_facesync_writes():
    import re

    import yaml

    from facesync.metrics import RunMetrics

    run = RunMetrics("plan", "faceset.yaml", "unused.prom")
    run.pending, run.unsafe = 0, False
    written = {metric.name for metric in run.registry(0).collect()}
    rules = yaml.safe_load((ROOT / "examples" / "monitoring" / "facesync-alerts.yml").read_text())["groups"][0]["rules"]

    used = {name for rule in rules for name in re.findall(r"facesync_\w+", rule["expr"])}
    assert used and used <= written, used - written
    assert {"FacesyncRunFailed", "FacesyncDrift"} <= {rule["alert"] for rule in rules}
