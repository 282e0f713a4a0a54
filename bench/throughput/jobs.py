"""One timed import job: its wall and database times, CPU of every process, and peak RSS."""

from __future__ import annotations

import contextlib
import os
import re
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from bench.throughput.config import (
    BATCH,
    CLOCK_TICKS,
    CONCURRENCY,
    ORG,
    BenchError,
)
from bench.throughput.inputs import device
from bench.throughput.procfs import tree_cpu_s
from bench.throughput.samplers import InFlight, PeakRss
from bench.throughput.services import Cluster, Servers
from tests.harness.processes import BIN, Proc


@dataclass
class CpuSnapshot:
    worker: float
    beat: float
    postgres: float
    simulator: float
    redis: float
    machine: float = 0.0  # every CPU's busy time (/proc/stat)
    bench: float = 0.0  # this process


def reference_ms() -> float:
    """CPU milliseconds of a fixed piece of Python work (JSON and dicts of 1,000 devices, as the
    service does them), best of three: how fast this machine's CPUs are right now. On a shared
    virtual machine it moves with the neighbours, and every CPU figure moves with it."""
    import orjson

    batch = [device("ref", i) for i in range(BATCH)]
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for _ in range(20):
            decoded = orjson.loads(orjson.dumps({"deviceList": batch}))["deviceList"]
            _ = [{**entry, "status": "created"} for entry in decoded]
        best = min(best, time.process_time() - started)
    return best * 1000


def machine_busy_s() -> float:
    """CPU seconds the whole machine has been busy (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / CLOCK_TICKS


@dataclass
class Bench:
    """What every job of one bench run shares."""

    servers: Servers
    sim: Proc
    env: dict[str, str]
    workdir: Path
    db: Engine
    rss: PeakRss


def cpu_snapshot(bench: Bench, c: Cluster) -> CpuSnapshot:
    own = resource.getrusage(resource.RUSAGE_SELF)
    return CpuSnapshot(
        worker=tree_cpu_s(c.worker.pid),
        beat=tree_cpu_s(c.beat.pid),
        postgres=tree_cpu_s(bench.servers.postgres_pid),
        simulator=tree_cpu_s(bench.sim.pid),
        redis=tree_cpu_s(bench.servers.redis_pid),
        machine=machine_busy_s(),
        bench=own.ru_utime + own.ru_stime,
    )


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> CpuSnapshot:
    return CpuSnapshot(
        **{name: getattr(after, name) - getattr(before, name) for name in vars(before)}
    )


@dataclass
class JobRun:
    label: str
    pool: str
    devices: int
    status: str
    created: int
    wall_s: float  # submit started -> the CLI saw the end
    e2e_s: float  # job created_at -> finished_at (database clock)
    intake_s: float  # created_at -> the first chunk claimed (file read, rows and chunks committed)
    send_s: float  # the first chunk claimed -> finished_at
    done_at: list[float]  # when each chunk's outcomes were written (seconds from the first claim)
    cli_cpu_s: float
    cli_rss_mb: float
    cpu: CpuSnapshot
    rss: dict[str, list[float]] = field(default_factory=dict)
    call_s: list[float] = field(default_factory=list)
    load_before: str = ""
    sim_rss_mb: float = 0.0
    in_flight: int = 0  # the most calls held in the rate budget at once
    reference_ms: float = 0.0  # reference_ms() just before the job
    file_mb: float = 0.0  # the input file's size

    @property
    def other_cores(self) -> float:
        """CPUs kept busy, on average, by processes that are not part of this bench (other
        work on a shared machine): the machine's busy time minus everything measured here."""
        known = (
            self.cpu.worker + self.cpu.beat + self.cpu.postgres + self.cpu.simulator
            + self.cpu.redis + self.cpu.bench + self.cli_cpu_s
        )  # fmt: skip
        return max(0.0, self.cpu.machine - known) / self.wall_s

    @property
    def e2e_rate(self) -> float:
        return self.devices / self.e2e_s

    @property
    def send_rate(self) -> float:
        return self.devices / self.send_s

    @property
    def sustained_rate(self) -> float:
        """Devices per second while every call slot is busy: between the end of the first round
        of calls and the start of the last (the first and last ``CONCURRENCY`` chunks to finish
        are left out: the pipeline filling and draining)."""
        done = self.done_at
        if len(done) <= 2 * CONCURRENCY:
            return self.send_rate
        first, last = CONCURRENCY - 1, len(done) - CONCURRENCY - 1
        return (last - first) * BATCH / (done[last] - done[first])

    def us(self, seconds: float) -> float:
        return seconds * 1e6 / self.devices

    @property
    def ours_cpu_s(self) -> float:
        return self.cpu.worker + self.cpu.beat + self.cli_cpu_s

    @property
    def max_rss_mb(self) -> float:
        return max([self.cli_rss_mb, *(v for vs in self.rss.values() for v in vs)])


@dataclass
class Submitted:
    """``enos-import submit FILE --wait`` run to its end."""

    job_id: str
    wall_s: float
    usage: resource.struct_rusage
    in_flight: int


def submit_and_wait(
    bench: Bench, label: str, path: Path, c: Cluster, timeout_s: float
) -> Submitted:
    """Runs the CLI (its CPU and peak RSS from ``wait4``), watching the workers and the calls in
    flight; fails on a timeout, a dead worker or an exit status other than 0."""
    out_path, err_path = bench.workdir / f"{label}.out", bench.workdir / f"{label}.err"
    t0 = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        cli = subprocess.Popen(
            [str(BIN / "enos-import"), "submit", str(path), "--org", ORG, "--wait"],
            env=bench.env,
            cwd=bench.workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    bench.rss.track("cli", cli.pid)
    deadline = time.monotonic() + timeout_s
    with InFlight(bench.servers.redis_url) as in_flight:
        try:
            while True:
                pid, wait_status, usage = os.wait4(cli.pid, os.WNOHANG)
                if pid:
                    cli.returncode = os.waitstatus_to_exitcode(wait_status)
                    break
                for proc in c.procs:
                    proc.check_alive()
                if time.monotonic() > deadline:
                    raise BenchError(f"{label}: the job did not end within {timeout_s:.0f} s")
                time.sleep(0.05)
        finally:
            if cli.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(cli.pid, signal.SIGKILL)
                cli.wait(10)
    wall = time.perf_counter() - t0
    stdout = out_path.read_text()
    job_id = stdout.splitlines()[0].strip() if stdout else ""
    if cli.returncode != 0 or not job_id:
        raise BenchError(
            f"{label}: submit exited {cli.returncode}\n{stdout[-500:]}\n"
            f"{err_path.read_text()[-2000:]}"
        )
    return Submitted(job_id, wall, usage, in_flight.peak)


@dataclass
class JobTimes:
    """A finished job as the database saw it (its clock): epoch seconds, and when each chunk's
    outcomes were written, in seconds from the first claim."""

    status: str
    ok: int
    total: int
    created: float
    finished: float
    first_claim: float
    done_at: list[float]


def job_times(db: Engine, job_id: str) -> JobTimes:
    with db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, created + adopted AS ok, total, "
                "extract(epoch from created_at) AS created, "
                "extract(epoch from finished_at) AS finished, "
                "(SELECT min(first_attempt_at) FROM import_chunks c WHERE c.job_id = s.job_id) "
                "AS first_claim FROM import_job_status s WHERE job_id = :id"
            ),
            {"id": job_id},
        ).one()
        # A chunk's rows are written in one transaction: their updated_at is its end.
        ends = conn.execute(
            text(
                "SELECT extract(epoch from max(updated_at)) FROM import_items "
                "WHERE job_id = :id GROUP BY chunk_seq ORDER BY 1"
            ),
            {"id": job_id},
        ).scalars()
        first = float(row.first_claim)
        done_at = [float(t) - first for t in ends]
    return JobTimes(
        row.status, int(row.ok), int(row.total), float(row.created), float(row.finished), first,
        done_at,
    )  # fmt: skip


def run_job(
    bench: Bench, label: str, path: Path, devices: int, c: Cluster, timeout_s: float
) -> JobRun:
    """One ``submit --wait`` of ``path`` on the running workers ``c``, measured."""
    load_before = Path("/proc/loadavg").read_text().split()[0]
    reference = reference_ms()
    bench.rss.reset()
    bench.rss.track("worker", c.worker.pid)
    bench.rss.track("beat", c.beat.pid)
    before = cpu_snapshot(bench, c)
    done = submit_and_wait(bench, label, path, c, timeout_s)
    after = cpu_snapshot(bench, c)
    bench.rss.untrack("cli")
    bench.rss.sample()
    times = job_times(bench.db, done.job_id)
    if times.status != "completed" or times.ok != devices or times.total != devices:
        raise BenchError(
            f"{label}: job {done.job_id} ended {times.status} with {times.ok}/{devices} created"
        )
    peaks = bench.rss.by_label()
    peaks.pop("cli", None)
    return JobRun(
        label=label,
        pool=c.pool,
        devices=devices,
        status=times.status,
        created=times.ok,
        wall_s=done.wall_s,
        e2e_s=times.finished - times.created,
        intake_s=times.first_claim - times.created,
        send_s=times.finished - times.first_claim,
        done_at=times.done_at,
        cli_cpu_s=done.usage.ru_utime + done.usage.ru_stime,
        cli_rss_mb=done.usage.ru_maxrss / 1024,
        cpu=cpu_delta(before, after),
        rss=peaks,
        call_s=call_times(c.worker.log, done.job_id),
        load_before=load_before,
        in_flight=done.in_flight,
        reference_ms=reference,
        file_mb=path.stat().st_size / 1e6,
    )


def call_times(log: Path, job_id: str) -> list[float]:
    """batchCreate call times of one job, from the workers' ``chunk.sent`` lines (``call_s``,
    rendered as JSON or as ``key=value``)."""
    times = []
    with contextlib.suppress(OSError):
        for line in log.read_text(errors="replace").splitlines():
            if job_id in line and "chunk.sent" in line:
                found = CALL_S.search(line)
                if found:
                    times.append(float(found.group(1)))
    return times


CALL_S = re.compile(r"""call_s"?[=:]\s*([0-9.]+)""")
