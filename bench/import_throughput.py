"""Import throughput, CPU per device and peak memory of the whole service, against DESIGN's targets.

A deployment in miniature on loopback: its own PostgreSQL database (``enos_import_bench``, dropped
and created, then ``enos-import db upgrade``), Redis database 12 (flushed) as the broker (the
machine's servers on 127.0.0.1:5432 and :6379, or private ones where none listen), the real
``enos-import simulator`` answering each 1,000-device batchCreate in about a second
(``latency_ms=500,per_device_us=500``), Celery workers and beat as subprocesses. It measures:

1. the time of one 1,000-device call, sequentially from this process (the bound's call time);
2. the official EnOS SDK (``poseidon.urlopen``) calling batchCreate in a plain sequential loop;
3. for each worker set-up (prefork 8 as deployed, prefork 10 and threads 10; the rate budget
   keeps 8 calls in flight whatever the processes): a warm-up job, then twice (``--repeat``) a
   100,000-device CSV (three products) through ``enos-import submit FILE --org o-demo --wait``:
   wall time, devices/s against ``concurrency x batch size / call time``, CPU seconds of every
   process of ours (workers with their prefork children, beat, the CLI) and of PostgreSQL, the
   simulator and Redis (``/proc/<pid>/stat``), peak RSS (``VmHWM``) of each of our processes;
4. a 1,000,000-device file with the simulator's latency set to 0 and fresh prefork 10 workers,
   for the peak RSS of every process (and its wall time and CPU).

Every subprocess runs in its own session and is killed with its process group in ``finally``;
every wait is bounded (one module per job under ``bench/throughput/``). The results replace the
"Import throughput, CPU and memory" section of
``docs/benchmarks.md`` (the other sections stay).

    .venv/bin/python -m bench.import_throughput [--devices N] [--memory-devices N]
        [--workers POOL:PROCESSES,...] [--repeat N] [--no-write] [--keep]

Exit status 0 when some worker set-up met the throughput, SDK and CPU targets (its best job)
and the memory run kept every process under 200 MB; 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
import time
from pathlib import Path

from bench.throughput.calls import probe_call_time, sdk_baseline
from bench.throughput.config import (
    BATCH,
    CONCURRENCY,
    DEFAULT_WORKERS,
    DOC,
    MEMORY_WORKERS,
    REPEAT,
    SDK_CALLS,
    SECTION,
    WARMUP_DEVICES,
)
from bench.throughput.inputs import write_csv
from bench.throughput.jobs import Bench, JobRun, run_job
from bench.throughput.procfs import status_kb
from bench.throughput.report import Results, machine_with_postgres, mean, met, print_run, section
from bench.throughput.samplers import PeakRss
from bench.throughput.services import (
    Workers,
    cluster,
    drop_database,
    fresh_database,
    import_env,
    servers,
    sim_faults,
    simulator,
)
from tests.harness.docs import write_section
from tests.harness.processes import ROOT


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.import_throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--devices", type=int, default=100_000, help="devices of each timed job")
    parser.add_argument(
        "--memory-devices", type=int, default=1_000_000, help="devices of the memory run (0: skip)"
    )
    parser.add_argument(
        "--workers",
        default=",".join(DEFAULT_WORKERS),
        help="Celery worker set-ups to time, POOL:PROCESSES, comma-separated",
    )
    parser.add_argument(
        "--memory-workers", default=MEMORY_WORKERS, help="the worker set-up of the memory run"
    )
    parser.add_argument(
        "--repeat", type=int, default=REPEAT, help="timed jobs per worker set-up (best counts)"
    )
    parser.add_argument("--sdk-calls", type=int, default=SDK_CALLS, help="calls of the SDK loop")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    args = cli.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = ".venv/bin/python -m bench.import_throughput" + (
        " " + " ".join(given) if given else ""
    )
    try:
        specs = [Workers.parse(text) for text in args.workers.split(",") if text]
        memory_spec = Workers.parse(args.memory_workers)
    except ValueError as exc:
        cli.error(str(exc))
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    t_start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="enos-import-bench-")
            print(f"work folder: {tmp}")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="enos-import-bench-"))
        res = measure(args, specs, memory_spec, Path(tmp), stack.enter_context(PeakRss()))
    print(f"bench took {time.monotonic() - t_start:.0f} s")
    res.command, res.started = command, started
    text_out = section(res)
    if args.no_write:
        print("\n" + text_out)
    else:
        write_section(DOC, SECTION, text_out)
        print(f"wrote the '{SECTION[3:]}' section of {DOC.relative_to(ROOT)}")
    return 0 if met(res) else 1


def measure(
    args: argparse.Namespace,
    specs: list[Workers],
    memory_spec: Workers,
    workdir: Path,
    rss: PeakRss,
) -> Results:
    """The call time, the SDK loop, the timed jobs of every worker set-up, the memory run."""
    tag = f"b{int(time.time()) % 100000:05d}"
    with servers() as found:
        db = fresh_database(found)
        try:
            with simulator(workdir) as (url, sim):
                bench = Bench(found, sim, import_env(url, found), workdir, db, rss)
                probe = probe_call_time(url, f"{tag}-probe")
                print(f"call time (1,000 devices, sequential): {[round(t, 3) for t in probe]}")
                sdk = sdk_baseline(url, f"{tag}-sdk", args.sdk_calls)
                print(
                    f"SDK loop: {sdk.devices:,} devices in {sdk.wall_s:.2f} s = "
                    f"{sdk.devices_per_s:,.0f}/s (call mean {mean(sdk.call_s):.3f} s)",
                    flush=True,
                )
                bound = CONCURRENCY * BATCH / mean(probe)
                runs = timed_jobs(bench, specs, args, tag, bound, sdk.devices_per_s)
                memory = None
                if args.memory_devices:
                    sim_faults(url, {})
                    memory = memory_run(bench, memory_spec, args.memory_devices, tag)
                    print_run(memory, bound, sdk.devices_per_s)
            info = machine_with_postgres(found.admin_url)
        finally:
            db.dispose()
            with contextlib.suppress(Exception):
                drop_database(found)
    return Results("", probe, sdk, runs, memory, "", info)


def timed_jobs(
    bench: Bench,
    specs: list[Workers],
    args: argparse.Namespace,
    tag: str,
    bound: float,
    sdk_rate: float,
) -> list[JobRun]:
    runs = []
    for n, spec in enumerate(specs):
        # Every process of the worker takes at least one chunk before the timed job.
        warm_devices = max(WARMUP_DEVICES, 2 * spec.processes * BATCH)
        warm = write_csv(bench.workdir / "warm.csv", f"{tag}-w{n}", warm_devices)
        with cluster(spec, bench.env, bench.workdir, bench.db) as c:
            run_job(bench, f"warm-{spec.slug}", warm, warm_devices, c, 120)
            for k in range(args.repeat):
                path = write_csv(bench.workdir / "run.csv", f"{tag}-r{n}{k}", args.devices)
                run = run_job(
                    bench, f"{args.devices // 1000}k #{k + 1}", path, args.devices, c, 600
                )
                runs.append(run)
                print_run(run, bound, sdk_rate)
                path.unlink()
    return runs


def memory_run(bench: Bench, spec: Workers, devices: int, tag: str) -> JobRun:
    """A million devices (by default) through fresh workers, the simulator without latency."""
    path = write_csv(bench.workdir / "memory.csv", f"{tag}-m", devices)
    with cluster(spec, bench.env, bench.workdir, bench.db) as c:
        memory = run_job(bench, f"{devices // 1000}k memory", path, devices, c, 900)
    memory.sim_rss_mb = (status_kb(bench.sim.pid, "VmHWM") or 0) / 1024
    path.unlink()
    return memory


if __name__ == "__main__":
    sys.exit(main())
