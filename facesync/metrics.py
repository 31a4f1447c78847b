"""``--metrics-file FILE``: what a plan or apply run did, in Prometheus text format, for watching cron runs.

The file is meant for node_exporter's textfile collector (``--collector.textfile.directory``; name it
``*.prom``): each run replaces it whole and atomically (``prometheus_client.write_to_textfile`` writes a
temporary file beside it and renames it), so the collector never reads half a file. Every series is a
gauge describing the *last* run, labelled with the ``command`` and the ``source`` (the manifest or plan
file as given), so several scheduled jobs can write several files into one folder:

- ``facesync_last_run_timestamp_seconds``, ``facesync_last_run_duration_seconds``,
  ``facesync_last_run_success`` (1/0) and ``facesync_last_run_exit_code``: when, how long, how it ended.
  A plan succeeds when it could be made (exit 0, 2 or 3: changes are not a failure); an apply when it
  exits 0. ``facesync_last_success_timestamp_seconds`` is carried over from the previous file when this
  run failed, so "no success for a day" can be alerted on.
- ``facesync_changes_pending``: drift. After plan, the operations the plan holds; after apply, the
  operations that did not get done (0 when the library now matches). ``facesync_plan_unsafe``: 1 when
  the plan needs ``--force``.
- ``facesync_operations{kind, outcome}``: plan counts each kind as ``planned``; apply counts each kind by
  the executor's outcome (done, already, failed, skipped).
- ``facesync_api_calls{endpoint}`` and ``facesync_api_errors{code}``: every HTTP attempt of the run
  (refresh, resolve, apply, verification; retries included), and the Baidu error codes answered
  (``no_answer`` for timeouts and refused connections). The local library makes no HTTP call, so for
  ``local:`` targets the calls are absent and the errors are those of failed operations.

The numbers come from what the run already produces (the Plan, the ApplyResult, the HTTP client's
call records); the commands only say which of those they have.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable

import click

from facesync.errors import EXIT_CHANGES, EXIT_ERROR, EXIT_OK, EXIT_UNSAFE, ConfigError, FacesyncError

log = logging.getLogger(__name__)

PREFIX = "facesync"
SUCCESS_CODES = {"plan": (EXIT_OK, EXIT_CHANGES, EXIT_UNSAFE), "apply": (EXIT_OK,)}
NO_ANSWER = "no_answer"


class RunMetrics:
    """What one command run did, gathered while it runs (from any thread) and written once at its end."""

    def __init__(self, command: str, source: str, path: str, clock: Callable[[], float] = time.time):
        self.command = command
        self.source = source
        self.path = path
        self._clock = clock
        self.started = clock()
        self._began = time.monotonic()
        self._lock = threading.Lock()
        self.operations: Counter[tuple[str, str]] = Counter()
        self.calls: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.pending: int | None = None
        self.unsafe: bool | None = None

    # -- what the run reports ----------------------------------------------------------------------

    def plan(self, plan) -> None:
        with self._lock:
            self.operations = Counter((op.kind.value, "planned") for op in plan.operations)
            self.pending = len(plan.operations)
            self.unsafe = bool(plan.safety.unsafe and not plan.safety.forced)

    def applied(self, result) -> None:
        with self._lock:
            self.operations = Counter((r.operation.kind.value, r.outcome) for r in result.results)
            self.pending = sum(1 for r in result.results if not r.succeeded)
            if not self.errors:  # no HTTP call records (a local library): the failed operations' codes
                self.errors.update(str(r.error_code) for r in result.results
                                   if r.error_code is not None and not r.succeeded)

    def call(self, record) -> None:
        """An HTTP client's ``CallRecord``: one attempt at an endpoint."""
        with self._lock:
            self.calls[record.endpoint] += 1
            if record.error_code is None:
                self.errors[NO_ANSWER] += 1
            elif record.error_code != 0:
                self.errors[str(record.error_code)] += 1

    # -- the file ----------------------------------------------------------------------------------

    def registry(self, exit_code: int):
        from prometheus_client import CollectorRegistry, Gauge

        registry = CollectorRegistry()
        base = {"command": self.command, "source": self.source}

        def gauge(name: str, help_text: str, value: float | None, **labels: str) -> Gauge | None:
            if value is None:
                return None
            metric = Gauge(f"{PREFIX}_{name}", help_text, [*base, *labels], registry=registry)
            metric.labels(**base, **labels).set(value)
            return metric

        succeeded = exit_code in SUCCESS_CODES.get(self.command, (EXIT_OK,))
        gauge("last_run_timestamp_seconds", "When the last run started (Unix time).", self.started)
        gauge("last_run_duration_seconds", "How long the last run took.", time.monotonic() - self._began)
        gauge("last_run_success", "1 when the last run did its job, else 0.", int(succeeded))
        gauge("last_run_exit_code", "The exit code of the last run.", exit_code)
        last_success = self.started if succeeded else previous_success(self.path, base)
        gauge("last_success_timestamp_seconds", "When the last successful run started (Unix time).", last_success)
        gauge("changes_pending", "Operations the library still needs to match the manifest (drift).", self.pending)
        gauge("plan_unsafe", "1 when the plan needs --force (too many deletes, a protected group).",
              None if self.unsafe is None else int(self.unsafe))
        self._labelled(registry, "operations", "Operations of the last run by kind and outcome.",
                       {("kind", "outcome"): self.operations}, base)
        self._labelled(registry, "api_calls", "HTTP calls of the last run by endpoint, retries included.",
                       {("endpoint",): Counter({(k,): v for k, v in self.calls.items()})}, base)
        self._labelled(registry, "api_errors", "Error answers of the last run by Baidu error code.",
                       {("code",): Counter({(k,): v for k, v in self.errors.items()})}, base)
        return registry

    @staticmethod
    def _labelled(registry, name: str, help_text: str, series: dict, base: dict) -> None:
        from prometheus_client import Gauge

        [(names, counts)] = series.items()
        metric = Gauge(f"{PREFIX}_{name}", help_text, [*base, *names], registry=registry)
        for values, count in sorted(counts.items()):
            metric.labels(**base, **dict(zip(names, values, strict=True))).set(count)

    def write(self, exit_code: int) -> None:
        from prometheus_client import write_to_textfile

        write_to_textfile(self.path, self.registry(exit_code))


def previous_success(path: str, labels: dict) -> float | None:
    """``last_success_timestamp_seconds`` of the same command and source in the file a run left before."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError:
        return None
    from prometheus_client.parser import text_string_to_metric_families

    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == f"{PREFIX}_last_success_timestamp_seconds" and all(
                        sample.labels.get(k) == v for k, v in labels.items()):
                    return sample.value
    except ValueError:  # not Prometheus text: this run's file replaces it
        return None
    return None


# -- the run in progress, for the commands and the HTTP client --------------------------------------

_active: RunMetrics | None = None


def observe_plan(plan) -> None:
    """The plan the command made or loaded (no-op without --metrics-file)."""
    if _active is not None:
        _active.plan(plan)


def observe_apply(result) -> None:
    """The executor's ApplyResult (no-op without --metrics-file)."""
    if _active is not None:
        _active.applied(result)


def _check_writable(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
        raise ConfigError(f"--metrics-file {path}: cannot write in {folder}",
                          hint="name a file in an existing, writable folder (node_exporter's textfile folder)")
    if os.path.isdir(path):
        raise ConfigError(f"--metrics-file {path} is a folder", hint="name a file such as facesync.prom")


def metrics_option(command: str, source_param: str):
    """Add ``--metrics-file`` to a click command and record its run: exit code, time, what it reported."""

    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, metrics_file: str | None = None, **kwargs):
            global _active
            if metrics_file is None:
                return function(*args, **kwargs)
            _check_writable(metrics_file)
            from facesync.api import baidu

            run = RunMetrics(command, str(kwargs.get(source_param, "")), metrics_file)
            _active = run
            remove = baidu.add_call_observer(run.call)
            code = EXIT_ERROR
            try:
                code = function(*args, **kwargs)
                return code
            except FacesyncError as error:
                code = error.exit_code
                raise
            except KeyboardInterrupt:
                code = 130
                raise
            finally:
                remove()
                _active = None
                try:
                    run.write(code if isinstance(code, int) else EXIT_OK)
                except OSError as error:
                    log.error("could not write the metrics file %s: %s", metrics_file, error.strerror or error)

        return click.option("--metrics-file", "metrics_file", metavar="FILE", type=click.Path(dir_okay=False),
                            default=None,
                            help="Write this run's metrics (Prometheus text, for node_exporter's textfile "
                                 "collector) to FILE, atomically.")(wrapper)

    return decorate
