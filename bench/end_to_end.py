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
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
from bench.e2e_runs import hosts, run_embedded, run_peer, run_service
from bench.import_throughput import Cluster, Workers, write_csv

ROOT = Path(__file__).resolve().parent.parent
SWEEP = (1, 2, 4, 8, 16)
DEPLOY_PROCESSES = 10  # deploy/docker-compose.yml: --pool prefork --concurrency 10
PEER_CONCURRENCY = 8
# Separate names from bench.import_throughput's, so that the two can run at the same time.
E2E_DB = "enos_import_e2e"
REDIS_DB = 14


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

    def timed(self, devices: int, run: Callable[[Path], Outcome]) -> Outcome:
        """``run`` on a fresh file of ``devices`` rows, with how busy the machine was meanwhile."""
        path = self.csv(devices)
        busy, started = it.machine_busy_s(), time.monotonic()
        try:
            outcome = run(path)
        finally:
            path.unlink()
        outcome.busy_cpus = (it.machine_busy_s() - busy) / (time.monotonic() - started)
        return outcome

    def service(self, label: str, devices: int, c: Cluster, env: dict[str, str]) -> Outcome:
        return self.timed(
            devices,
            lambda path: run_service(label, path, devices, c, self.sim, env, self.workdir, self.db),
        )

    def warm(self, c: Cluster, env: dict[str, str]) -> None:
        """One small job on fresh workers, not counted: every process imports and connects."""
        devices = 2 * c.spec.processes * it.BATCH
        self.service(f"warm-{c.spec.slug}", devices, c, env)

    def peer(self, devices: int, concurrency: int) -> Outcome:
        env = with_concurrency(self.env, concurrency)
        return self.timed(devices, lambda path: run_peer(path, devices, env, concurrency))

    def embedded(self, devices: int) -> Outcome:
        folder = self.workdir / f"embedded-{self.files + 1}"
        return self.timed(devices, lambda path: run_embedded(path, devices, self.env, folder))

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
