"""End to end, side by side in one run: the service, the strong peer, the SDK loop and the
embedded default, on the same simulator, as a user comparing tools would.

The simulator answers a 1,000-device batchCreate in about a second
(``latency_ms=500,per_device_us=500``). Each tool imports a fresh CSV file of the same shape
(three products, the columns of ``bench.import_throughput``; fresh deviceKeys each time, since
the simulator keeps every device it made):

1. the strong peer (``bench.peer``: asyncio + httpx, 8 calls in flight, no persistence), from
   its process start to its exit;
2. the service as ``deploy/`` runs it (PostgreSQL, Redis, ``celery worker --pool prefork
   --concurrency 10`` and beat, ``ENOS_IMPORT_MAX_CONCURRENCY`` 8) importing through
   ``enos-import submit FILE --wait``, from the submit's process start to the job's
   ``finished_at`` (reading the file included), after one warm-up job on the same workers;
3. the official SDK in a sequential loop (``bench.import_throughput.sdk_baseline``);
4. ``enos-import run FILE`` on SQLite (the embedded default), from its process start to its exit;
5. scale-out: two worker processes (two ``celery worker`` commands with their own hostnames, as
   two hosts run them) at ``MAX_CONCURRENCY`` 16, twice the devices, against one at 8 (2.);
6. throughput against concurrency 1, 2, 4, 8, 16 for the service (prefork processes =
   concurrency + 2, as deploy/ runs 10 for 8) and the peer, ``--sweep-rounds`` rounds of calls
   each (6: 6,000 devices at concurrency 1, 96,000 at 16), drawn in
   ``docs/throughput-vs-concurrency.png``.

The peer and the service run ``--repeat`` times, alternating; the targets are judged on each
tool's best run and every run is shown. CPU and peak RSS are measured as
``bench.import_throughput`` does. The results replace the "End to end against the strong peer"
section of ``docs/benchmarks.md``.

    .venv/bin/python -m bench.end_to_end [--devices N] [--repeat N] [--sweep-rounds N]
        [--redis-db N] [--no-sweep] [--no-write] [--keep]

Exit status 0 when every target passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
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

from bench import import_throughput as it
from bench.common import write_section
from bench.e2e_report import (
    DOC,
    SECTION,
    Outcome,
    Results,
    draw_chart,
    passed,
    print_outcome,
    section,
)
from bench.import_throughput import (
    BIN,
    ORG,
    BenchError,
    Cluster,
    PeakRss,
    Workers,
    start,
    tree,
    wait_for,
    write_csv,
)
from bench.pg_cpu import BackendCpu

ROOT = Path(__file__).resolve().parent.parent
SWEEP = (1, 2, 4, 8, 16)
DEPLOY_PROCESSES = 10  # deploy/docker-compose.yml: --pool prefork --concurrency 10
PEER_CONCURRENCY = 8
# Separate names from bench.import_throughput's, so that the two can run at the same time.
E2E_DB = "enos_import_e2e"
REDIS_DB = 14


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
            peak_kb = max(peak_kb, it.status_kb(proc.pid, "VmHWM") or 0)
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


def run_service(
    label: str, path: Path, devices: int, c: Cluster, sim: it.Proc, env: dict[str, str],
    workdir: Path, db: Engine,
) -> Outcome:  # fmt: skip
    clock = SubmitClock()
    with BackendCpu(it.ADMIN_URL, it.BENCH_DB) as backends, clock:
        job = it.run_job(label, path, devices, c, sim, env, workdir, db, clock, 900)
    with db.connect() as conn:
        finished = conn.execute(
            text(
                "SELECT extract(epoch from finished_at) FROM import_job_status "
                "ORDER BY created_at DESC LIMIT 1"
            )
        ).scalar_one()
    return Outcome(
        "service",
        int(env["ENOS_IMPORT_MAX_CONCURRENCY"]),
        devices,
        float(finished) - clock.cli_started,
        cpu_s=job.ours_cpu_s,
        postgres_s=job.cpu.postgres,
        our_db_s=backends.seconds,
        # The CLI's VmHWM as sampled, not run_job's ru_maxrss (see run_process).
        rss_mb=max(mb for values in clock.by_label().values() for mb in values),
        cli_wall_s=job.wall_s,
        workers=c.pool,
    )


@contextlib.contextmanager
def hosts(count: int, spec: Workers, env: dict[str, str], workdir: Path, db: Engine
          ) -> Iterator[Cluster]:  # fmt: skip
    """``count`` Celery workers as separate hosts would run them (each its own hostname and
    prefork pool, one broker and database), and one beat; ready once beat swept. The workers
    share one process group under a shell, so the cluster's CPU and RSS cover all of them."""
    it.flush_redis()
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

        def swept() -> bool:
            with db.connect() as conn:
                last = conn.execute(
                    text("SELECT last_run_at FROM import_service_beats WHERE name = 'sweeper'")
                ).scalar()
            return last is not None and float(last) >= started

        wait_for(swept, "a first sweep", 90, running.procs)
        wanted = 1 + count * (spec.processes + 1)
        wait_for(lambda: len(tree(workers.pid)) >= wanted, "the workers", 60, running.procs)
        yield running
    finally:
        if beat is not None:
            beat.stop()
        workers.stop()


def with_concurrency(env: dict[str, str], concurrency: int) -> dict[str, str]:
    return {**env, "ENOS_IMPORT_MAX_CONCURRENCY": str(concurrency)}


class Bench:
    """One run of everything: the simulator, the database and the files it made."""

    def __init__(self, url: str, sim: it.Proc, workdir: Path, db: Engine, tag: str) -> None:
        self.url, self.sim, self.workdir, self.db, self.tag = url, sim, workdir, db, tag
        self.env = it.base_env(url)
        self.files = 0

    def csv(self, devices: int) -> Path:
        self.files += 1
        name = f"{self.tag}-f{self.files}"
        return write_csv(self.workdir / f"{name}.csv", name, devices)

    def service(self, label: str, devices: int, c: Cluster, env: dict[str, str]) -> Outcome:
        path = self.csv(devices)
        try:
            return run_service(label, path, devices, c, self.sim, env, self.workdir, self.db)
        finally:
            path.unlink()

    def warm(self, c: Cluster, env: dict[str, str]) -> None:
        """One small job on fresh workers, not counted: every process imports and connects."""
        devices = 2 * c.spec.processes * it.BATCH
        self.service(f"warm-{c.spec.slug}", devices, c, env)

    def peer(self, devices: int, concurrency: int) -> Outcome:
        path = self.csv(devices)
        try:
            return run_peer(path, devices, with_concurrency(self.env, concurrency), concurrency)
        finally:
            path.unlink()

    def embedded(self, devices: int) -> Outcome:
        path = self.csv(devices)
        try:
            return run_embedded(path, devices, self.env, self.workdir / f"embedded-{self.files}")
        finally:
            path.unlink()

    def compare(self, devices: int, repeat: int) -> list[Outcome]:
        """The peer and the deployed service, alternating, on the same workers."""
        spec = Workers("prefork", DEPLOY_PROCESSES)
        out = []
        with it.cluster(spec, self.env, self.workdir, self.db) as c:
            self.warm(c, self.env)
            for k in range(repeat):
                out.append(show(self.peer(devices, PEER_CONCURRENCY)))
                out.append(show(self.service(f"service #{k + 1}", devices, c, self.env)))
        return out

    def scale_out(self, devices: int) -> Outcome:
        env = with_concurrency(self.env, 16)
        with hosts(2, Workers("prefork", DEPLOY_PROCESSES), env, self.workdir, self.db) as c:
            self.warm(c, env)
            run = self.service("two hosts", devices, c, env)
        run.tool, run.workers = "service, two hosts", f"2 x {c.spec.name}"
        return show(run)

    def sweep(self, rounds: int) -> list[Outcome]:
        out = []
        for concurrency in SWEEP:
            devices = rounds * concurrency * it.BATCH
            out.append(show(self.peer(devices, concurrency)))
            env = with_concurrency(self.env, concurrency)
            spec = Workers("prefork", concurrency + 2)
            with it.cluster(spec, env, self.workdir, self.db) as c:
                self.warm(c, env)
                out.append(show(self.service(f"sweep {concurrency}", devices, c, env)))
        return out


def show(outcome: Outcome) -> Outcome:
    print_outcome(outcome)
    return outcome


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def isolate(redis_db: int) -> None:
    """Points bench.import_throughput's helpers at this bench's own database and Redis db."""
    it.BENCH_DB = E2E_DB
    it.DB_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{E2E_DB}"
    it.REDIS_URL = f"redis://127.0.0.1:6379/{redis_db}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=100_000, help="devices of each compared run")
    parser.add_argument("--repeat", type=int, default=2, help="runs of the peer and the service")
    parser.add_argument("--sweep-rounds", type=int, default=6, help="rounds of calls per sweep run")
    parser.add_argument("--sdk-calls", type=int, default=it.SDK_CALLS, help="calls of the SDK loop")
    parser.add_argument("--redis-db", type=int, default=REDIS_DB, help="the broker's Redis db")
    parser.add_argument("--no-sweep", action="store_true", help="skip the concurrency sweep")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python -m bench.end_to_end", *given])
    isolate(args.redis_db)
    res = Results(command, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), load())
    t_start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="enos-import-e2e-")
            print(f"work folder: {tmp}")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="enos-import-e2e-"))
        workdir = Path(tmp)
        db = it.fresh_database()
        it.POSTGRES_PID[0], it.REDIS_PID[0] = it.postmaster_pid(), it.redis_pid()
        try:
            with it.simulator(workdir) as (url, sim):
                bench = Bench(url, sim, workdir, db, f"e{int(time.time()) % 100000:05d}")
                res.probe_s = it.probe_call_time(url, f"{bench.tag}-probe")
                sdk = it.sdk_baseline(url, f"{bench.tag}-sdk", args.sdk_calls)
                res.sdk = show(Outcome("SDK loop", 1, sdk.devices, sdk.wall_s))
                res.compared = bench.compare(args.devices, args.repeat)
                res.embedded = [show(bench.embedded(args.devices)) for _ in range(args.repeat)]
                res.scale_out = bench.scale_out(2 * args.devices)
                if not args.no_sweep:
                    res.sweep = bench.sweep(args.sweep_rounds)
        finally:
            db.dispose()
            with contextlib.suppress(Exception):
                it.drop_database()
    res.wall_s = time.monotonic() - t_start
    res.load_after = load()
    print(f"bench took {res.wall_s:.0f} s; load average before {res.load_before}, "
          f"after {res.load_after}")  # fmt: skip
    text_out = section(res)
    if args.no_write:
        print("\n" + text_out)
    else:
        if res.sweep:
            draw_chart(res)
        write_section(DOC, SECTION, text_out)
        print(f"wrote the '{SECTION[3:]}' section of {DOC.relative_to(ROOT)}")
    return 0 if passed(res) else 1


if __name__ == "__main__":
    sys.exit(main())
