"""How bench.end_to_end runs each tool once and measures it: the peer and the embedded runner
as processes (time, CPU, peak RSS), the service through bench.throughput's job run, and
a cluster of worker processes as separate hosts would run them."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bench.e2e_report import Outcome
from bench.pg_cpu import BackendCpu
from bench.throughput.config import BENCH_DB, LEAN_WORKER, ORG, BenchError
from bench.throughput.jobs import Bench, run_job
from bench.throughput.procfs import status_kb, tree
from bench.throughput.samplers import PeakRss
from bench.throughput.services import Cluster, Workers, flush_redis, swept_since
from tests.harness.processes import BIN, ROOT, start, wait_until


class SubmitClock(PeakRss):
    """The peak-RSS sampler that also notes when the submit process started: ``run_job`` hands
    it the CLI's pid right after starting it."""

    cli_started = 0.0

    def track(self, label: str, pid: int) -> None:
        if label == "cli":
            self.cli_started = time.time()
        super().track(label, pid)


def run_process(
    argv: list[str], env: dict[str, str], cwd: Path, timeout_s: float
) -> tuple[float, str, float, float]:
    """Runs ``argv`` to its end: (seconds, stdout, CPU seconds, peak RSS MB); fails unless 0.

    Peak RSS is ``VmHWM`` read every 20 ms while the process lives, not ``wait4``'s
    ``ru_maxrss``: Linux starts a child's ``ru_maxrss`` at its parent's resident size (this
    bench's, about 100 MB), which would hide a small tool's own peak."""
    started = time.perf_counter()
    peak_kb = 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, 9)
                proc.wait(10)
                raise BenchError(f"{argv[:3]} did not end within {timeout_s:.0f} s")
            peak_kb = max(peak_kb, status_kb(proc.pid, "VmHWM") or 0)
            time.sleep(0.02)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        if proc.returncode != 0:
            raise BenchError(
                f"{shlex.join(argv[:3])} exited {proc.returncode}:\n{stdout[-500:]}\n"
                f"{err.read().decode(errors='replace')[-2000:]}"
            )
    return seconds, stdout, usage.ru_utime + usage.ru_stime, peak_kb / 1024


def run_peer(path: Path, devices: int, env: dict[str, str], concurrency: int) -> Outcome:
    argv = [sys.executable, "-m", "bench.peer", str(path), "--concurrency", str(concurrency)]
    seconds, stdout, cpu, rss = run_process(argv, env, ROOT, 600)
    tally = json.loads(stdout.strip().splitlines()[-1])
    if tally["created"] != devices:
        raise BenchError(f"the peer created {tally['created']} of {devices} devices: {tally}")
    return Outcome("peer", concurrency, devices, seconds, cpu_s=cpu, rss_mb=rss)


def run_embedded(path: Path, devices: int, env: dict[str, str], folder: Path) -> Outcome:
    """``enos-import run FILE`` with no database URL: a fresh SQLite file in ``folder``."""
    from worker.db.session import DEFAULT_SQLITE

    folder.mkdir()
    own = {**env, "ENOS_IMPORT_DATABASE_URL": ""}
    argv = [str(BIN / "enos-import"), "run", str(path), "--org", ORG]
    seconds, _, cpu, rss = run_process(argv, own, folder, 900)
    engine = create_engine(f"sqlite:///{folder / DEFAULT_SQLITE}")
    try:
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT status, created + adopted AS ok FROM import_job_status")
            ).one()
    finally:
        engine.dispose()
    if row.status != "completed" or row.ok != devices:
        raise BenchError(f"the embedded run ended {row.status} with {row.ok}/{devices} created")
    concurrency = int(env["ENOS_IMPORT_MAX_CONCURRENCY"])
    return Outcome("embedded", concurrency, devices, seconds, cpu_s=cpu, rss_mb=rss)


def run_service(bench: Bench, label: str, path: Path, devices: int, c: Cluster) -> Outcome:
    """``submit --wait`` through ``run_job``, on ``bench`` whose sampler is a ``SubmitClock``."""
    clock = bench.rss
    assert isinstance(clock, SubmitClock)
    with BackendCpu(bench.servers.admin_url, BENCH_DB) as backends:
        job = run_job(bench, label, path, devices, c, 900)
    with bench.db.connect() as conn:
        finished = conn.execute(
            text(
                "SELECT extract(epoch from finished_at) FROM import_job_status "
                "ORDER BY created_at DESC LIMIT 1"
            )
        ).scalar_one()
    return Outcome(
        "service",
        int(bench.env["ENOS_IMPORT_MAX_CONCURRENCY"]),
        devices,
        float(finished) - clock.cli_started,
        cpu_s=job.ours_cpu_s,
        postgres_s=job.cpu.postgres,
        our_db_s=backends.seconds,
        # The CLI's VmHWM as sampled, not run_job's ru_maxrss (see run_process).
        rss_mb=max(mb for values in clock.by_label().values() for mb in values),
        cli_wall_s=job.wall_s,
        workers=c.pool,
        phases=(
            f"job created to first claim {job.intake_s:.1f} s, then sending {job.send_s:.1f} s; "
            f"ours: workers {job.us(job.cpu.worker):.1f}, beat {job.us(job.cpu.beat):.1f}, "
            f"submit {job.us(job.cli_cpu_s):.1f} µs/device; reference {job.reference_ms:.0f} ms"
        ),
    )


@contextlib.contextmanager
def hosts(count: int, spec: Workers, env: dict[str, str], workdir: Path, db: Engine
          ) -> Iterator[Cluster]:  # fmt: skip
    """``count`` Celery workers as separate hosts would run them (each its own hostname and
    prefork pool, one broker and database), and one beat; ready once beat swept. The workers
    share one process group under a shell, so the cluster's CPU and RSS cover all of them."""
    flush_redis(env["ENOS_IMPORT_BROKER_URL"])
    celery = str(BIN / "celery")
    started = time.time()
    commands = [
        shlex.join(
            [
                celery,
                "-A",
                "worker.celery_app",
                "worker",
                "--pool",
                spec.pool,
                "--concurrency",
                str(spec.processes),
                *LEAN_WORKER,
                "--loglevel",
                "WARNING",
                "--hostname",
                f"host{n}-{os.getpid()}@%h",
            ]
        )
        for n in range(count)
    ]
    workers = start(f"hosts-{count}", ["sh", "-c", " & ".join(commands) + " & wait"], env, workdir)
    beat = None
    try:
        beat = start(f"beat-hosts-{count}", [celery, "-A", "worker.celery_app", "beat",
                     "--loglevel", "WARNING", "-s", str(workdir / f"beat-hosts-{count}")],
                     env, workdir)  # fmt: skip
        running = Cluster(spec, workers, beat)

        wait_until(lambda: swept_since(db, started), "a first sweep", 90, running.procs)
        wanted = 1 + count * (spec.processes + 1)
        wait_until(lambda: len(tree(workers.pid)) >= wanted, "the workers", 60, running.procs)
        yield running
    finally:
        if beat is not None:
            beat.stop()
        workers.stop()
