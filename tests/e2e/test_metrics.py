"""A real prefork worker's ``/metrics`` during and after an import: its device counts equal the
``import_job_status`` view's, although its children are replaced every few tasks and the
simulator throttles, fails and loses answers."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.services import FINAL, Simulator, job_id_from, job_status, process_env
from tests.harness.processes import BIN, Proc, base_env, free_port, run_cli, start, wait_until
from worker.db.session import Database

DEVICES = 600
BATCH = 25
# Fixed seed: the simulator draws one fault per call, in the order calls arrive.
FAULTS = "latency_ms=20,http429=0.1,http503=0.1,reset_after_commit=0.1,seed=7"
OUTCOMES = ("created", "adopted", "failed", "conflict", "review", "cancelled")


@dataclass
class Metered:
    simulator: Simulator
    db: Database
    env: dict[str, str]
    workdir: Path
    worker: Proc
    beat: Proc
    metrics_url: str

    @property
    def processes(self) -> list[Proc]:
        return [self.worker, self.beat, self.simulator.proc]

    def scrape(self) -> dict[str, float]:
        """Every sample of ``/metrics``, by name and labels (``name{a="x",b="y"}``)."""
        response = httpx.get(self.metrics_url, timeout=10, trust_env=False)
        response.raise_for_status()
        samples: dict[str, float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
        return samples


@pytest.fixture
def metered(pg_db: Database, redis_url: str, workdir: Path) -> Iterator[Metered]:
    port = free_port()
    sim_argv = [
        str(BIN / "enos-import"), "simulator", "--port", str(port), "--seed-demo",
        "--faults", FAULTS,
    ]  # fmt: skip
    sim = Simulator(f"http://127.0.0.1:{port}", start("simulator", sim_argv, base_env(), workdir))
    metrics_port = free_port()
    env = process_env(sim.url, pg_db.url, redis_url)
    env.update(
        ENOS_IMPORT_METRICS_PORT=str(metrics_port),
        ENOS_IMPORT_METRICS_DIR=str(workdir / "metrics"),
        ENOS_IMPORT_BATCH_SIZE=str(BATCH),
        ENOS_IMPORT_RECONCILE_DELAY_S="0.1",
    )
    celery = str(BIN / "celery")
    procs: list[Proc] = [sim.proc]
    try:
        wait_until(sim.up, "the simulator to answer", 30, [sim.proc])
        # Children are replaced every 3 tasks: the sums must survive processes that are gone.
        worker = start(
            "celery-worker",
            [celery, "-A", "worker.celery_app", "worker", "--concurrency", "2",
             "--max-tasks-per-child", "3", "--loglevel", "WARNING",
             "--hostname", f"metrics-{os.getpid()}@%h"],
            env, workdir,
        )  # fmt: skip
        procs.append(worker)
        beat = start(
            "celery-beat",
            [celery, "-A", "worker.celery_app", "beat", "-s", str(workdir / "beat-schedule"),
             "--loglevel", "WARNING"],
            env, workdir,
        )  # fmt: skip
        procs.append(beat)
        running = Metered(
            sim, pg_db, env, workdir, worker, beat, f"http://127.0.0.1:{metrics_port}/metrics"
        )
        wait_until(_answers(running), "the worker's /metrics", 30, procs)
        yield running
    finally:
        for proc in reversed(procs):
            proc.stop()


def _answers(metered: Metered):
    def probe() -> bool:
        try:
            metered.scrape()
        except httpx.HTTPError:
            return False
        return True

    return probe


def write_devices(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["productKey", "deviceKey", "deviceName", "timezone"])
        for n in range(DEVICES):
            writer.writerow(
                ["pk-meter" if n % 2 else "pk-inverter", f"mx-{n:05d}", f"m {n}", "+08:00"]
            )
    return path


def devices_by_outcome(samples: dict[str, float]) -> dict[str, int]:
    return {
        outcome: int(samples.get(f'enos_import_devices_total{{outcome="{outcome}"}}', 0))
        for outcome in OUTCOMES
    }


def test_worker_metrics_match_the_view(metered: Metered) -> None:
    path = write_devices(metered.workdir / "devices.csv")
    done = run_cli(
        ["submit", str(path), "--org", "o-demo"], metered.env, metered.workdir, timeout_s=60,
        watched=metered.processes,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = job_id_from(done.stdout, done.stderr)

    during: list[dict[str, float]] = []

    def finished() -> dict[str, object] | None:
        during.append(metered.scrape())  # scraped while the import runs
        job = job_status(metered.db, job_id)
        return job if job is not None and job["status"] in FINAL else None

    job = wait_until(finished, f"job {job_id} to end", 120, metered.processes)
    assert job["status"] == "completed", job
    assert len(during) > 1

    after = metered.scrape()
    view = {outcome: int(job[outcome]) for outcome in OUTCOMES}  # type: ignore[call-overload]
    assert devices_by_outcome(after) == view
    assert view["created"] + view["adopted"] == DEVICES
    # Counters only grow, across every scrape, whichever child did the work.
    seen = [sum(devices_by_outcome(s).values()) for s in [*during, after]]
    assert seen == sorted(seen)

    stats = metered.simulator.stats()
    calls = sum(v for k, v in after.items() if k.startswith("enos_import_batch_create_calls_total"))
    assert calls == stats["calls"], stats
    faults = stats.get("faults", {})
    assert after.get("enos_import_rate_limited_total", 0) == faults.get("http429", 0)
    assert after["enos_import_batch_create_duration_seconds_count"] == calls
    retries = sum(v for k, v in after.items() if k.startswith("enos_import_chunk_retries_total"))
    assert retries >= faults.get("http429", 0) + faults.get("http503", 0)
    # Nothing is in flight any more, though children that held calls are gone.
    assert after["enos_import_calls_in_flight"] == 0
    assert after["enos_import_call_budget_slots"] == 8
