"""The deployment in miniature: PostgreSQL and Redis (the machine's, or private ones), the bench
database, the simulator, Celery workers and beat."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import redis
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from bench.throughput.config import (
    BATCH,
    BENCH_DB,
    CAP,
    CONCURRENCY,
    FAULTS,
    HOST,
    LEAN_WORKER,
    ORG,
    POOLS,
    REDIS_DB,
)
from bench.throughput.procfs import postmaster_pid, redis_pid, tree
from tests.harness.processes import BIN, Proc, free_port, start, wait_until
from tests.harness.processes import base_env as harness_env
from tests.harness.services import postgres_admin_url, redis_server_url
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET


@dataclass(frozen=True)
class Servers:
    """The PostgreSQL and Redis this bench uses, and their server processes (for their CPU)."""

    admin_url: str  # PostgreSQL's own ``postgres`` database
    db_url: str  # the bench database
    redis_url: str  # the broker
    postgres_pid: int
    redis_pid: int


@contextlib.contextmanager
def servers() -> Iterator[Servers]:
    """The machine's PostgreSQL and Redis on loopback, or private ones where none listen."""
    with postgres_admin_url() as admin_url, redis_server_url() as redis_server:
        db_url = make_url(admin_url).set(database=BENCH_DB).render_as_string(hide_password=False)
        redis_url = f"{redis_server}/{REDIS_DB}"
        yield Servers(admin_url, db_url, redis_url, postmaster_pid(admin_url), redis_pid(redis_url))


def base_env() -> dict[str, str]:
    """The processes' environment, with Python's default bytecode cache: modules compiled once
    and cached, as an installed service has them (deploy/Dockerfile compiles at install);
    without it every process start recompiles ~500 modules, about a second of CPU."""
    env = harness_env()
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def import_env(api_url: str, found: Servers) -> dict[str, str]:
    """The environment of the service's processes: the servers, the simulator's demo account,
    default settings otherwise."""
    env = base_env()
    env.update(
        ENOS_IMPORT_DATABASE_URL=found.db_url,
        ENOS_IMPORT_BROKER_URL=found.redis_url,
        ENOS_IMPORT_API_URL=api_url,
        ENOS_IMPORT_ACCESS_KEY=DEMO_APP_KEY,
        ENOS_IMPORT_SECRET_KEY=DEMO_APP_SECRET,
        ENOS_IMPORT_ORG_ID=ORG,
        ENOS_IMPORT_BATCH_SIZE=str(BATCH),
        ENOS_IMPORT_MAX_CONCURRENCY=str(CONCURRENCY),
        ENOS_IMPORT_LOG_FORMAT="json",
        ENOS_IMPORT_LOG_LEVEL="INFO",
    )
    return env


def fresh_database(found: Servers) -> Engine:
    """The bench database, dropped, created and migrated (``enos-import db upgrade``)."""
    drop_database(found)
    admin = create_engine(found.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {BENCH_DB}"))
    finally:
        admin.dispose()
    subprocess.run(
        [str(BIN / "enos-import"), "db", "upgrade"],
        env=import_env("http://127.0.0.1:1", found),
        check=True,
        timeout=120,
        capture_output=True,
    )
    return create_engine(found.db_url, pool_size=2)


def drop_database(found: Servers) -> None:
    admin = create_engine(found.admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
    finally:
        admin.dispose()


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


@contextlib.contextmanager
def simulator(workdir: Path, faults: str = FAULTS) -> Iterator[tuple[str, Proc]]:
    """The simulator on a loopback port, answering as the benchmarks' set-up says (``faults``:
    its ``--faults``, the calls' latency)."""
    port = free_port()
    proc = start(
        "simulator",
        [
            str(BIN / "enos-import"), "simulator", "--host", HOST, "--port", str(port),
            "--seed-demo", "--faults", faults, "--product-cap", str(CAP), "--ou-cap", str(CAP),
            "--private-key-out", str(workdir / "demo-key.pem"),
        ],
        base_env(),
        workdir,
    )  # fmt: skip
    url = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: sim_get(url, "/__sim/stats"), "the simulator", 60, [proc], 0.1)
        yield url, proc
    finally:
        proc.stop()


def sim_get(url: str, path: str) -> Any:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
        response = http.get(path)
    response.raise_for_status()
    return response.json()


def sim_faults(url: str, faults: dict[str, float]) -> None:
    with httpx.Client(base_url=url, timeout=30, trust_env=False) as http:
        http.post("/__sim/faults", json=faults).raise_for_status()


@dataclass(frozen=True)
class Workers:
    """How the Celery worker runs: ``pool`` with ``processes`` (prefork children or threads).
    The calls in flight stay bounded by ``ENOS_IMPORT_MAX_CONCURRENCY`` (8) whatever this is."""

    pool: str
    processes: int

    @classmethod
    def parse(cls, text: str) -> Workers:
        pool, _, count = text.partition(":")
        if pool not in POOLS:
            raise ValueError(f"unknown pool {pool!r} (one of {', '.join(POOLS)})")
        return cls(pool, int(count or CONCURRENCY))

    @property
    def name(self) -> str:
        return f"{self.pool} {self.processes}"

    @property
    def slug(self) -> str:
        return f"{self.pool}{self.processes}"


@dataclass
class Cluster:
    spec: Workers
    worker: Proc
    beat: Proc

    @property
    def pool(self) -> str:
        return self.spec.name

    @property
    def procs(self) -> list[Proc]:
        return [self.worker, self.beat]

    def stop(self) -> None:
        self.beat.stop()
        self.worker.stop()


def swept_since(db: Engine, started: float) -> bool:
    """Whether the sweeper ran (beat published a sweep and a worker ran it) since ``started``."""
    with db.connect() as conn:
        last = conn.execute(
            text("SELECT last_run_at FROM import_service_beats WHERE name = 'sweeper'")
        ).scalar()
    return last is not None and float(last) >= started


@contextlib.contextmanager
def cluster(
    spec: Workers, env: dict[str, str], workdir: Path, db: Engine, app: str = "worker.celery_app"
) -> Iterator[Cluster]:
    """A Celery worker as ``spec`` says, and beat; ready once beat's first sweep ran."""
    flush_redis(env["ENOS_IMPORT_BROKER_URL"])
    celery = str(BIN / "celery")
    started = time.time()
    pool = spec.slug
    worker = start(
        f"worker-{pool}",
        [celery, "-A", app, "worker", "--pool", spec.pool,
         "--concurrency", str(spec.processes), *LEAN_WORKER, "--loglevel", "WARNING",
         "--hostname", f"bench-{pool}-{os.getpid()}@%h"],
        env,
        workdir,
    )  # fmt: skip
    beat: Proc | None = None
    try:
        beat = start(
            f"beat-{pool}",
            [celery, "-A", "worker.celery_app", "beat", "--loglevel", "WARNING",
             "-s", str(workdir / f"beat-schedule-{pool}")],
            env,
            workdir,
        )  # fmt: skip
        running = Cluster(spec, worker, beat)

        wait_until(
            lambda: swept_since(db, started),
            f"a first sweep of the {pool} workers",
            90,
            running.procs,
        )
        if spec.pool == "prefork":
            wait_until(
                lambda: len(tree(worker.pid)) >= spec.processes + 1,
                "the prefork children",
                30,
                running.procs,
            )
        yield running
    finally:
        if beat is not None:
            beat.stop()
        worker.stop()
