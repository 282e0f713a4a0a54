"""Prometheus metrics of the workers, served on ``ENOS_IMPORT_METRICS_PORT`` (0: off).

A prefork worker runs its tasks in child processes, and Prometheus scrapes the parent. The
numbers of every child are summed through prometheus-client's multiprocess mode: each process
writes its values to memory-mapped files in one directory (``ENOS_IMPORT_METRICS_DIR``), and
the parent's ``/metrics`` reads them all. The library chooses that mode when it is first
imported, so it is imported lazily, and only a worker's main process turns the mode on (at
``worker_init``, before it forks): a CLI command run beside a worker writes no files.

Counters of a child that exited (``--max-tasks-per-child``, a SIGKILL, the OOM killer) stay in
its files, so totals never go back; the gauges of live processes (calls in flight) of a child
that is gone are dropped before every scrape, which also covers a child killed without running
its exit hook.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections import Counter as Tally
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery.signals import worker_init, worker_process_shutdown

from worker.enos import errors
from worker.enos.client import EnosClient
from worker.enos.models import BatchResult, CreateOption
from worker.host import pid_alive
from worker.settings import get_settings

if TYPE_CHECKING:
    from worker.importer.send import SendReport

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
PREFIX = "enos_import"


class Instruments:
    """The worker's metrics; created on first use, after the process chose its mode."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.devices = Counter(
            f"{PREFIX}_devices", "Devices that reached an outcome in a worker.", ["outcome"]
        )
        self.calls = Counter(
            f"{PREFIX}_batch_create_calls",
            "batchCreate calls by result class and EnOS code (empty when EnOS gave none).",
            ["result", "code"],
        )
        self.call_seconds = Histogram(
            f"{PREFIX}_batch_create_duration_seconds",
            "How long one batchCreate call took, answered or not.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0, 120.0),
        )
        self.retries = Counter(
            f"{PREFIX}_chunk_retries", "Chunk attempts that ended in a retry later.", ["reason"]
        )
        self.throttled = Counter(
            f"{PREFIX}_rate_limited",
            "HTTP 429 answers to batchCreate (each halves the shared rate budget).",
        )
        self.splits = Counter(
            f"{PREFIX}_chunk_splits",
            "Chunks split in smaller ones (EnOS refused the batch size, or a learned limit).",
        )
        self.in_flight = Gauge(
            f"{PREFIX}_calls_in_flight",
            "batchCreate calls holding a slot of the rate budget right now.",
            multiprocess_mode="livesum",
        )
        self.budget = Gauge(
            f"{PREFIX}_call_budget_slots",
            "Calls in flight allowed to the EnOS account (ENOS_IMPORT_MAX_CONCURRENCY).",
            multiprocess_mode="livemax",
        )


_instruments: Instruments | None = None
_instruments_lock = threading.Lock()


def instruments() -> Instruments:
    """This process's metrics; the first caller makes them (the threads pool of ``enos-import
    run`` calls this from several threads at once, and a metric can be registered only once)."""
    global _instruments
    if _instruments is None:
        with _instruments_lock:
            if _instruments is None:
                _instruments = Instruments()
    return _instruments


def use_multiprocess_mode(directory: str) -> str:
    """Makes this process and the children it forks write their metrics to files in
    ``directory`` (default: a new temporary one), emptied first. Must run before the first
    metric is made:
    prometheus-client chooses its mode when it is first imported."""
    path = directory or tempfile.mkdtemp(prefix="enos-import-metrics-")
    Path(path).mkdir(parents=True, exist_ok=True)
    # The files of an earlier run would be summed with this one's (and a reused pid would
    # continue another process's values): start empty.
    for stale in Path(path).glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[MULTIPROC_ENV] = path
    return path


# How the last batchCreate call of this task ended: the reason a retry is counted under.
_last_call: ContextVar[str | None] = ContextVar("enos_import_last_call", default=None)

# Result classes, by the error tree of the EnOS boundary (worker/enos/errors.py).
RESULT_OK = "ok"
RESULT_RATE_LIMITED = "rate_limited"
RESULT_TRANSIENT = "transient"
RESULT_ANSWER_LOST = "answer_lost"
RESULT_INVALID_ARGUMENTS = "invalid_arguments"
RESULT_REFUSED = "refused"
RESULT_CONFIGURATION = "configuration"


def result_class(exc: BaseException | None) -> str:
    """The result class of a call that raised ``exc`` (``None``: it was answered)."""
    if exc is None:
        return RESULT_OK
    classes: list[tuple[type[BaseException], str]] = [
        (errors.RateLimitedError, RESULT_RATE_LIMITED),
        (errors.TransientError, RESULT_TRANSIENT),
        (errors.AmbiguousError, RESULT_ANSWER_LOST),
        (errors.InvalidArgumentsError, RESULT_INVALID_ARGUMENTS),
        (errors.PermanentError, RESULT_REFUSED),
        (errors.ConfigurationError, RESULT_CONFIGURATION),
    ]
    return next((name for kind, name in classes if isinstance(exc, kind)), type(exc).__name__)


def record_call(seconds: float, exc: BaseException | None, code: int | None) -> None:
    """One batchCreate call ended: counts it by class and code, and times it."""
    metrics = instruments()
    result = result_class(exc)
    if code is None and exc is not None:
        code = getattr(exc, "code", None)
    metrics.calls.labels(result=result, code="" if code is None else str(code)).inc()
    metrics.call_seconds.observe(seconds)
    if result == RESULT_RATE_LIMITED:
        metrics.throttled.inc()
    _last_call.set(result)


def start_task() -> None:
    """Forgets the previous task's last call (a retry is counted under this task's own)."""
    _last_call.set(None)


def record_outcomes(statuses: Iterable[str]) -> None:
    """Devices whose outcome a committed transaction wrote (pending rows are not outcomes)."""
    devices = instruments().devices
    for status, count in Tally(s for s in statuses if s != "pending").items():
        devices.labels(outcome=status).inc(count)


def record_invalid(count: int) -> None:
    """Rows an intake in a worker found invalid (they never reach a chunk)."""
    if count:
        instruments().devices.labels(outcome="invalid").inc(count)


def record_send(report: SendReport) -> None:
    """One delivery of "send chunk N" ended; only a committed attempt counts."""
    plan = report.plan
    if plan is None or report.chunk_state is None:
        return
    record_outcomes(outcome.status for outcome in plan.answers.outcomes.values())
    record_chunk(report.chunk_state, split=bool(plan.split))


def record_chunk(chunk_state: str | None, split: bool) -> None:
    """What became of one chunk attempt: a split, or a retry later and why."""
    if split:
        instruments().splits.inc()
    elif chunk_state == "pending":
        last = _last_call.get()
        # An answered call with rows to send again (11714, a lookup that failed) is no call
        # error; an attempt that made no call waited in vain for a slot or a lookup.
        reason = {None: "no_call", RESULT_OK: "item_errors"}.get(last, last)
        instruments().retries.labels(reason=reason).inc()


class MeteredEnosClient(EnosClient):
    """The EnOS client whose batchCreate calls are counted, timed and shown in flight."""

    def batch_create(
        self, org_id: str, devices: Sequence[CreateOption], *, require_secret: bool = False
    ) -> BatchResult:
        in_flight = instruments().in_flight
        in_flight.inc()
        started = time.perf_counter()
        try:
            result = super().batch_create(org_id, devices, require_secret=require_secret)
        except BaseException as exc:
            record_call(time.perf_counter() - started, exc, None)
            raise
        finally:
            in_flight.dec()
        record_call(time.perf_counter() - started, None, result.code)
        return result


# ------------------------------------------------------------------------------------ serving


def prune_dead(path: str) -> None:
    """Drops the live gauges of every process that is gone (a SIGKILLed child never says so)."""
    from prometheus_client import multiprocess

    for file in Path(path).glob("gauge_live*_*.db"):
        pid = file.stem.rsplit("_", 1)[-1]
        if pid.isdigit() and not pid_alive(int(pid)):
            multiprocess.mark_process_dead(int(pid), path)


def serve(port: int, multiprocess_dir: str | None, address: str = "0.0.0.0") -> None:
    """Serves ``/metrics`` from this process: the sum of every process writing to
    ``multiprocess_dir``, or (``None``) this process's own registry."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server
    from prometheus_client.registry import Collector

    if multiprocess_dir is None:
        start_http_server(port, addr=address)
        return
    path = multiprocess_dir

    class LiveProcesses(Collector):
        """The multiprocess collector, after dropping the live gauges of processes gone."""

        def __init__(self) -> None:
            self._inner = multiprocess.MultiProcessCollector(None, path)

        def collect(self) -> Iterable[Any]:
            prune_dead(path)
            metrics: Iterable[Any] = self._inner.collect()
            return metrics

    prune_dead(path)  # the files of an earlier run whose processes are gone
    registry = CollectorRegistry()
    registry.register(LiveProcesses())
    start_http_server(port, addr=address, registry=registry)


_multiprocess_dir: str | None = None


@worker_init.connect
def _serve_from_worker(**_: Any) -> None:
    """The worker's main process chooses the multiprocess mode before any metric exists and
    before it forks its children, then serves the sum of them all."""
    global _multiprocess_dir
    settings = get_settings()
    if not settings.metrics_port:
        return
    _multiprocess_dir = use_multiprocess_mode(settings.metrics_dir)
    instruments().budget.set(settings.max_concurrency)
    serve(settings.metrics_port, _multiprocess_dir)


@worker_process_shutdown.connect
def _child_exit(pid: int | None = None, **_: Any) -> None:
    """A prefork child ends: its live gauges no longer count."""
    if _multiprocess_dir is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid(), _multiprocess_dir)
