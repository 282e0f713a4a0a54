"""The workers' metrics in one process: made once however many threads ask first (the threads
pool of ``enos-import run``), and counted from what a chunk attempt reports."""

from __future__ import annotations

import subprocess
import sys

from tests.harness.processes import ROOT

RACE = """
import threading
from worker import metrics

barrier = threading.Barrier(16)
errors = []

def first_use():
    barrier.wait()
    try:
        metrics.instruments().in_flight.inc()
    except Exception as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=first_use) for _ in range(16)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
assert not errors, errors
assert metrics.instruments().in_flight._value.get() == 16
"""


def test_threads_asking_at_once_share_one_set_of_metrics() -> None:
    for _ in range(5):  # a race: a few tries make a lost one unlikely to pass by luck
        done = subprocess.run(
            [sys.executable, "-c", RACE], cwd=ROOT, capture_output=True, text=True, timeout=60,
            check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr


def test_retry_reasons_follow_the_last_call() -> None:
    from prometheus_client import REGISTRY

    from worker import metrics
    from worker.enos import errors

    def retries(reason: str) -> float:
        value = REGISTRY.get_sample_value("enos_import_chunk_retries_total", {"reason": reason})
        return value or 0.0

    before = {r: retries(r) for r in ("rate_limited", "item_errors", "no_call")}
    metrics.start_task()
    metrics.record_call(0.1, errors.RateLimitedError("throttled", http_status=429), None)
    metrics.record_chunk("pending", split=False)
    metrics.start_task()
    metrics.record_call(0.1, None, 0)
    metrics.record_chunk("pending", split=False)
    metrics.start_task()
    metrics.record_chunk("pending", split=False)
    metrics.start_task()
    metrics.record_call(0.1, None, 0)
    metrics.record_chunk("done", split=False)
    assert {r: retries(r) - before[r] for r in before} == {
        "rate_limited": 1, "item_errors": 1, "no_call": 1,
    }  # fmt: skip
