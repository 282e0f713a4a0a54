"""End to end, side by side in one run: the service, the strong peer, the SDK loop and the
embedded default, on the same simulator, as a user comparing tools would.

The simulator answers a 1,000-device batchCreate in about a second
(``latency_ms=500,per_device_us=500``). Each tool imports a fresh CSV file of the same shape
(three products, the columns of ``bench.throughput.inputs``; fresh deviceKeys each time, since
the simulator keeps every device it made):

1. the strong peer (``bench.peer``: asyncio + httpx, 8 calls in flight, no persistence), from
   its process start to its exit;
2. the service as ``deploy/`` runs it (PostgreSQL, Redis, ``celery worker --pool prefork
   --concurrency 10`` and beat, ``ENOS_IMPORT_MAX_CONCURRENCY`` 8) importing through
   ``enos-import submit FILE --wait``, from the submit's process start to the job's
   ``finished_at`` (reading the file included), after one warm-up job on the same workers;
3. the official SDK in a sequential loop (``bench.throughput.calls.sdk_baseline``);
4. ``enos-import run FILE`` on SQLite (the embedded default), from its process start to its exit;
5. scale-out: two worker processes (two ``celery worker`` commands with their own hostnames, as
   two hosts run them) at ``MAX_CONCURRENCY`` 16, twice the devices, against one at 8 (2.);
6. throughput against concurrency 1, 2, 4, 8, 16 for the service (prefork processes =
   concurrency + 2, as deploy/ runs 10 for 8) and the peer, ``--sweep-rounds`` rounds of calls
   each (6: 6,000 devices at concurrency 1, 96,000 at 16), drawn in
   ``docs/throughput-vs-concurrency.png``.

The peer and the service run ``--repeat`` times, alternating, and so do the embedded run and the
two hosts; the targets are judged on each tool's best run and every run is shown. CPU and peak
RSS are measured as ``bench.import_throughput`` does (``bench.throughput``), on the same servers,
bench database and Redis database (so the two do not run at the same time). The results replace
the "End to end against the strong peer" section of ``docs/benchmarks.md``.

    .venv/bin/python -m bench.end_to_end [--devices N] [--repeat N] [--sweep-rounds N]
        [--no-sweep] [--no-write] [--keep]

Exit status 0 when every target passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

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
from bench.e2e_runs import SubmitClock, hosts, run_embedded, run_peer, run_service
from bench.throughput.calls import probe_call_time, sdk_baseline
from bench.throughput.config import BATCH, SDK_CALLS
from bench.throughput.inputs import write_csv
from bench.throughput.jobs import Bench, machine_busy_s
from bench.throughput.report import machine_with_postgres
from bench.throughput.services import (
    Cluster,
    Workers,
    cluster,
    drop_database,
    fresh_database,
    import_env,
    servers,
    simulator,
)
from tests.harness.docs import write_section
from tests.harness.processes import ROOT

SWEEP = (1, 2, 4, 8, 16)
DEPLOY_PROCESSES = 10  # deploy/docker-compose.yml: --pool prefork --concurrency 10
PEER_CONCURRENCY = 8


def with_concurrency(bench: Bench, concurrency: int) -> Bench:
    env = {**bench.env, "ENOS_IMPORT_MAX_CONCURRENCY": str(concurrency)}
    return dataclasses.replace(bench, env=env)


class Comparison:
    """One run of everything on one simulator and database, and the files it made."""

    def __init__(self, bench: Bench, tag: str) -> None:
        self.bench, self.tag = bench, tag
        self.files = 0

    def csv(self, devices: int) -> Path:
        self.files += 1
        name = f"{self.tag}-f{self.files}"
        return write_csv(self.bench.workdir / f"{name}.csv", name, devices)

    def timed(self, devices: int, run: Callable[[Path], Outcome]) -> Outcome:
        """``run`` on a fresh file of ``devices`` rows, with how busy the machine was meanwhile."""
        path = self.csv(devices)
        busy, started = machine_busy_s(), time.monotonic()
        try:
            outcome = run(path)
        finally:
            path.unlink()
        outcome.busy_cpus = (machine_busy_s() - busy) / (time.monotonic() - started)
        return outcome

    def service(self, bench: Bench, label: str, devices: int, c: Cluster) -> Outcome:
        return self.timed(devices, lambda path: run_service(bench, label, path, devices, c))

    def warm(self, bench: Bench, c: Cluster) -> None:
        """One small job on fresh workers, not counted: every process imports and connects."""
        self.service(bench, f"warm-{c.spec.slug}", 2 * c.spec.processes * BATCH, c)

    def peer(self, devices: int, concurrency: int) -> Outcome:
        env = with_concurrency(self.bench, concurrency).env
        return self.timed(devices, lambda path: run_peer(path, devices, env, concurrency))

    def embedded(self, devices: int) -> Outcome:
        folder = self.bench.workdir / f"embedded-{self.files + 1}"
        env = self.bench.env
        return self.timed(devices, lambda path: run_embedded(path, devices, env, folder))

    def compare(self, devices: int, repeat: int) -> list[Outcome]:
        """The peer and the deployed service, alternating, on the same workers."""
        b = self.bench
        out = []
        with cluster(Workers("prefork", DEPLOY_PROCESSES), b.env, b.workdir, b.db) as c:
            self.warm(b, c)
            for k in range(repeat):
                out.append(show(self.peer(devices, PEER_CONCURRENCY)))
                out.append(show(self.service(b, f"service #{k + 1}", devices, c)))
        return out

    def scale_out(self, devices: int, repeat: int) -> list[Outcome]:
        """Two hosts at 16 calls in flight, ``repeat`` runs on the same workers (the best
        counts, as for every tool)."""
        b = with_concurrency(self.bench, 16)
        out = []
        with hosts(2, Workers("prefork", DEPLOY_PROCESSES), b.env, b.workdir, b.db) as c:
            self.warm(b, c)
            for k in range(repeat):
                run = self.service(b, f"two hosts #{k + 1}", devices, c)
                run.tool, run.workers = "service, two hosts", f"2 x {c.spec.name}"
                out.append(show(run))
        return out

    def sweep(self, rounds: int) -> list[Outcome]:
        out = []
        for concurrency in SWEEP:
            devices = rounds * concurrency * BATCH
            out.append(show(self.peer(devices, concurrency)))
            b = with_concurrency(self.bench, concurrency)
            with cluster(Workers("prefork", concurrency + 2), b.env, b.workdir, b.db) as c:
                self.warm(b, c)
                out.append(show(self.service(b, f"sweep {concurrency}", devices, c)))
        return out


def show(outcome: Outcome) -> Outcome:
    print_outcome(outcome)
    return outcome


def load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.end_to_end",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=100_000, help="devices of each compared run")
    parser.add_argument("--repeat", type=int, default=2, help="runs of each tool")
    parser.add_argument("--sweep-rounds", type=int, default=6, help="rounds of calls per sweep run")
    parser.add_argument("--sdk-calls", type=int, default=SDK_CALLS, help="calls of the SDK loop")
    parser.add_argument("--no-sweep", action="store_true", help="skip the concurrency sweep")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = " ".join([".venv/bin/python -m bench.end_to_end", *given])
    res = Results(command, dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), load())
    t_start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="enos-import-e2e-")
            print(f"work folder: {tmp}")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="enos-import-e2e-"))
        clock = SubmitClock()
        stack.enter_context(clock)
        measure(args, Path(tmp), clock, res)
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


def measure(args: argparse.Namespace, workdir: Path, clock: SubmitClock, res: Results) -> None:
    """Every tool, one after the other, on one simulator and one bench database."""
    tag = f"e{int(time.time()) % 100000:05d}"
    with servers() as found:
        db = fresh_database(found)
        try:
            with simulator(workdir) as (url, sim):
                run = Comparison(Bench(found, sim, import_env(url, found), workdir, db, clock), tag)
                res.probe_s = probe_call_time(url, f"{tag}-probe")
                sdk = sdk_baseline(url, f"{tag}-sdk", args.sdk_calls)
                res.sdk = show(Outcome("SDK loop", 1, sdk.devices, sdk.wall_s))
                res.compared = run.compare(args.devices, args.repeat)
                res.embedded = [show(run.embedded(args.devices)) for _ in range(args.repeat)]
                res.scale_out = run.scale_out(2 * args.devices, args.repeat)
                if not args.no_sweep:
                    res.sweep = run.sweep(args.sweep_rounds)
            res.machine = machine_with_postgres(found.admin_url)
        finally:
            db.dispose()
            with contextlib.suppress(Exception):
                drop_database(found)


if __name__ == "__main__":
    sys.exit(main())
