"""Fixtures of real processes: the simulator server, a Celery worker and Celery beat.

Every process runs in a temporary working directory (nothing lands in the repository), writes
its output to a file there (shown when a wait fails), and is stopped by its process group with a
bounded wait, whatever the test did.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.services import Simulator, process_env
from tests.harness.processes import BIN, Proc, base_env, free_port, start, wait_until
from worker.db.session import Database
from worker.importer.sweeper import seconds_since_beat

STARTUP_S = 30.0


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "work"
    path.mkdir()
    return path


@pytest.fixture
def simulator(workdir: Path) -> Iterator[Simulator]:
    """``enos-import simulator --seed-demo --auth strict`` on a free loopback port."""
    port = free_port()
    argv = [
        str(BIN / "enos-import"), "simulator", "--port", str(port), "--seed-demo",
        "--auth", "strict", "--private-key-out", str(workdir / "demo-private-key.pem"),
    ]  # fmt: skip
    proc = start("simulator", argv, base_env(), workdir)
    sim = Simulator(f"http://127.0.0.1:{port}", proc)
    try:
        wait_until(sim.up, "the simulator to answer", STARTUP_S, [proc])
        yield sim
    finally:
        proc.stop()


@dataclass
class Cluster:
    """A deployment in miniature: the simulator, PostgreSQL, Redis, a worker and beat."""

    simulator: Simulator
    db: Database
    broker_url: str
    env: dict[str, str]
    workdir: Path
    worker: Proc
    beat: Proc

    @property
    def processes(self) -> list[Proc]:
        return [self.worker, self.beat, self.simulator.proc]


@pytest.fixture
def cluster_env() -> dict[str, str]:
    """More settings of the cluster's worker and beat; a test module overrides this fixture."""
    return {}


def start_worker(env: dict[str, str], workdir: Path, name: str = "celery-worker") -> Proc:
    """A Celery worker, prefork with 4 processes."""
    return start(
        name,
        [str(BIN / "celery"), "-A", "worker.celery_app", "worker", "--concurrency", "4",
         "--loglevel", "WARNING", "--hostname", f"{name}-{os.getpid()}@%h"],
        env,
        workdir,
    )  # fmt: skip


def start_beat(env: dict[str, str], workdir: Path, name: str = "celery-beat") -> Proc:
    return start(
        name,
        [str(BIN / "celery"), "-A", "worker.celery_app", "beat", "-s",
         str(workdir / f"{name}-schedule"), "--loglevel", "WARNING"],
        env,
        workdir,
    )  # fmt: skip


@pytest.fixture
def cluster(
    simulator: Simulator,
    pg_db: Database,
    redis_url: str,
    workdir: Path,
    cluster_env: dict[str, str],
) -> Iterator[Cluster]:
    """A Celery worker (prefork, 4 processes) and Celery beat on the session's PostgreSQL
    database (emptied first, by ``pg_db``) and the tests' Redis database (flushed first)."""
    env = process_env(simulator.url, pg_db.url, redis_url)
    # Queued paths must be inside a source root: the test's working directory is the one.
    env["ENOS_IMPORT_SOURCE_ROOTS"] = str(workdir)
    env.update(cluster_env)
    worker = start_worker(env, workdir)
    beat = None
    try:
        beat = start_beat(env, workdir)
        running = Cluster(simulator, pg_db, redis_url, env, workdir, worker, beat)
        # The sweeper's beat row appears once beat has published a sweep and the worker ran it.
        wait_until(
            lambda: _beat_seen(pg_db), "a first sweep (beat → worker)", STARTUP_S,
            running.processes,
        )  # fmt: skip
        yield running
    finally:
        if beat is not None:
            beat.stop()
        worker.stop()


def _beat_seen(db: Database) -> bool:
    with db.read() as session:
        return seconds_since_beat(session) is not None
