"""Import throughput, CPU per device and peak memory of the whole service, against DESIGN's targets.

A deployment in miniature on loopback: its own PostgreSQL database (``enos_import_bench``, dropped
and created, then ``enos-import db upgrade``), Redis database 12 (flushed) as the broker, the real
``enos-import simulator`` answering each 1,000-device batchCreate in about a second
(``latency_ms=500,per_device_us=500``), Celery workers and beat as subprocesses. It measures:

1. the time of one 1,000-device call, sequentially from this process (the bound's call time);
2. the official EnOS SDK (``poseidon.urlopen``) calling batchCreate in a plain sequential loop;
3. for each worker pool (prefork 8, as deployed, and threads 8): a warm-up job, then a
   100,000-device CSV (three products) through ``enos-import submit FILE --org o-demo --wait``:
   wall time, devices/s against ``concurrency x batch size / call time``, CPU seconds of every
   process of ours (workers with their prefork children, beat, the CLI) and of PostgreSQL, the
   simulator and Redis (``/proc/<pid>/stat``), peak RSS (``VmHWM``) of each of our processes;
4. a 1,000,000-device file with the simulator's latency set to 0, for the peak RSS of every
   process (and its wall time and CPU).

Every subprocess runs in its own session and is killed with its process group in ``finally``;
every wait is bounded. The results replace the "Import throughput, CPU and memory" section of
``docs/benchmarks.md`` (the other sections stay).

    .venv/bin/python -m bench.import_throughput [--devices N] [--memory-devices N]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Import throughput, CPU and memory"

HOST = "127.0.0.1"
ORG = "o-demo"
PRODUCTS = ("pk-meter", "pk-inverter", "pk-turbine")
BENCH_DB = "enos_import_bench"
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{BENCH_DB}"
REDIS_URL = "redis://127.0.0.1:6379/12"
FAULTS = "latency_ms=500,per_device_us=500"
CAP = 10_000_000
BATCH = 1000
CONCURRENCY = 8
POOLS = ("prefork", "threads")
WARMUP_DEVICES = 8_000
SDK_CALLS = 20
PROBE_CALLS = 3

# DESIGN's targets.
BOUND_FRACTION = 0.90
SDK_FACTOR = 5.0
CPU_US_PER_DEVICE = 50.0
RSS_LIMIT_MB = 200.0

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


class BenchError(RuntimeError):
    """Something other than a clean, complete import happened."""


# ---------------------------------------------------------------------------------- /proc
def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)


def _comm(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return raw[raw.index("(") + 1 : raw.rindex(")")]


def _ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                out[int(entry)] = int(fields[1])
    return out


def tree(root: int) -> list[int]:
    """``root`` and every live descendant."""
    parents = _ppids()
    found = [root] if root in parents else []
    frontier = list(found)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of a process tree, its reaped children included: a child that
    exits between two readings moves into its parent's cutime/cstime, so deltas stay right."""
    total = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def postgres_roots() -> list[int]:
    """The postmaster(s): ``postgres`` processes whose parent is not one."""
    parents = _ppids()
    names = {pid: _comm(pid) for pid in parents}
    return [
        pid
        for pid, ppid in parents.items()
        if names[pid] == "postgres" and names.get(ppid) != "postgres"
    ]


def pids_named(name: str) -> list[int]:
    return [pid for pid in _ppids() if _comm(pid) == name]


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class PeakRss:
    """Samples ``VmHWM`` of the tracked process trees a few times a second, keeps each pid's
    peak with a label (``worker``, ``worker child``, ``beat``, ``cli``)."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}
        self.peaks: dict[int, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def track(self, label: str, pid: int) -> None:
        with self._lock:
            self.roots[label] = pid

    def untrack(self, label: str) -> None:
        self.sample()
        with self._lock:
            self.roots.pop(label, None)

    def record(self, label: str, pid: int, kb: int) -> None:
        with self._lock:
            old = self.peaks.get(pid, (label, 0))[1]
            self.peaks[pid] = (label, max(old, kb))

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        for label, root in roots.items():
            for pid in tree(root):
                kb = status_kb(pid, "VmHWM")
                if kb is not None:
                    self.record(label if pid == root else f"{label} child", pid, kb)

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            self.sample()

    def by_label(self) -> dict[str, list[float]]:
        """Peak RSS in MB of every process seen, grouped by label."""
        out: dict[str, list[float]] = {}
        with self._lock:
            for label, kb in self.peaks.values():
                out.setdefault(label, []).append(kb / 1024)
        return {label: sorted(values, reverse=True) for label, values in sorted(out.items())}

    def reset(self) -> None:
        with self._lock:
            self.peaks.clear()


# ----------------------------------------------------------------------------- processes
@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no output)"

    def check(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited ({self.popen.returncode}):\n{self.tail()}")

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``; never hangs."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def start(name: str, argv: Sequence[str], env: dict[str, str], workdir: Path) -> Proc:
    log = workdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(argv),
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(name, popen, log)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for(probe: Any, what: str, timeout_s: float, watched: Sequence[Proc] = ()) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        for proc in watched:
            proc.check()
        with contextlib.suppress(Exception):
            value = probe()
            if value:
                return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.1)


def base_env(api_url: str) -> dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("ENOS_IMPORT_") and "proxy" not in name.lower()
    }
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        ENOS_IMPORT_DATABASE_URL=DB_URL,
        ENOS_IMPORT_BROKER_URL=REDIS_URL,
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


# Imported after the helpers above so that ``--help`` stays quick; these are the demo account's.
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET  # noqa: E402


# ------------------------------------------------------------------------------ services
def fresh_database() -> Engine:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {BENCH_DB}"))
    finally:
        admin.dispose()
    env = base_env("http://127.0.0.1:1")
    subprocess.run(
        [str(BIN / "enos-import"), "db", "upgrade"],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    return create_engine(DB_URL, pool_size=2)


def drop_database() -> None:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {BENCH_DB} WITH (FORCE)"))
    finally:
        admin.dispose()


def flush_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


@contextlib.contextmanager
def simulator(workdir: Path) -> Iterator[tuple[str, Proc]]:
    port = free_port()
    proc = start(
        "simulator",
        [
            str(BIN / "enos-import"), "simulator", "--host", HOST, "--port", str(port),
            "--seed-demo", "--faults", FAULTS, "--product-cap", str(CAP), "--ou-cap", str(CAP),
            "--private-key-out", str(workdir / "demo-key.pem"),
        ],
        base_env(""),
        workdir,
    )  # fmt: skip
    url = f"http://{HOST}:{port}"
    try:
        wait_for(lambda: sim_get(url, "/__sim/stats"), "the simulator", 60, [proc])
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


@dataclass
class Cluster:
    pool: str
    worker: Proc
    beat: Proc

    @property
    def procs(self) -> list[Proc]:
        return [self.worker, self.beat]

    def stop(self) -> None:
        self.beat.stop()
        self.worker.stop()


@contextlib.contextmanager
def cluster(pool: str, env: dict[str, str], workdir: Path, db: Engine) -> Iterator[Cluster]:
    """Celery worker (``pool``, concurrency 8) and beat; ready once beat's first sweep ran."""
    flush_redis()
    celery = str(BIN / "celery")
    started = time.time()
    worker = start(
        f"worker-{pool}",
        [celery, "-A", "worker.celery_app", "worker", "--pool", pool,
         "--concurrency", str(CONCURRENCY), "--loglevel", "WARNING",
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
        running = Cluster(pool, worker, beat)

        def swept() -> bool:
            with db.connect() as conn:
                last = conn.execute(
                    text("SELECT last_run_at FROM import_service_beats WHERE name = 'sweeper'")
                ).scalar()
            return last is not None and float(last) >= started

        wait_for(swept, f"a first sweep of the {pool} workers", 90, running.procs)
        if pool == "prefork":
            wait_for(
                lambda: len(tree(worker.pid)) >= CONCURRENCY + 1,
                "the prefork children",
                30,
                running.procs,
            )
        yield running
    finally:
        if beat is not None:
            beat.stop()
        worker.stop()


# ------------------------------------------------------------------------------- inputs
HEADER = (
    "productKey,deviceKey,deviceName,deviceName.zh_CN,timezone,deviceDesc,attr.serial,"
    "attr.ratedPowerKw,tag.site,tag.row\n"
)
SITES = ("north-ridge", "sea-breeze", "mesa-alta", "lake-view")
ZONES = ("+08:00", "Asia/Shanghai", "America/Mexico_City", "Europe/Berlin")


def write_csv(path: Path, run: str, devices: int) -> Path:
    """``devices`` rows over three products, deviceKeys unique to ``run``."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        rows = []
        for i in range(devices):
            product = PRODUCTS[i % 3]
            site = SITES[i % 4]
            rows.append(
                f"{product},{run}-{i:07d},{product} {site} {i},设备{i}号,{ZONES[i % 4]},"
                f"{product} on row {i % 40} of {site},SN{i:09d},{250 + i % 7},{site},{i % 40}\n"
            )
            if len(rows) >= 10_000:
                out.writelines(rows)
                rows.clear()
        out.writelines(rows)
    return path


def device(run: str, i: int) -> dict[str, Any]:
    product = PRODUCTS[i % 3]
    site = SITES[i % 4]
    return {
        "productKey": product,
        "deviceKey": f"{run}-{i:07d}",
        "deviceName": {
            "defaultValue": f"{product} {site} {i}",
            "i18nValue": {"zh_CN": f"设备{i}号"},
        },
        "timezone": ZONES[i % 4],
        "deviceDesc": f"{product} on row {i % 40} of {site}",
        "deviceAttributes": {"serial": f"SN{i:09d}", "ratedPowerKw": 250 + i % 7},
        "deviceTags": {"site": site, "row": str(i % 40)},
    }


# --------------------------------------------------------------------------- call timing
def probe_call_time(url: str, run: str) -> list[float]:
    """Sequential 1,000-device calls with the service's own client: the bound's call time."""
    from worker.enos.client import EnosClient

    times = []
    with EnosClient(url, DEMO_APP_KEY, DEMO_APP_SECRET, read_timeout=60) as client:
        for call in range(PROBE_CALLS):
            batch = [device(f"{run}{call}", i) for i in range(BATCH)]
            t0 = time.perf_counter()
            result = client.batch_create(ORG, batch)
            times.append(time.perf_counter() - t0)
            if sum(1 for item in result.items if item.asset_id) != BATCH:
                raise BenchError("the probe call did not create every device")
    return times


@dataclass
class SdkRun:
    calls: int
    devices: int
    wall_s: float
    call_s: list[float]

    @property
    def devices_per_s(self) -> float:
        return self.devices / self.wall_s


def sdk_baseline(url: str, run: str, calls: int) -> SdkRun:
    """The plain script: the official SDK calling batchCreate in a loop, one call at a time."""
    from poseidon import poseidon

    endpoint = f"{url}/connect-service/v2.4/devices?action=batchCreate&orgId={ORG}"
    bodies = [
        {"deviceList": [device(f"{run}{call}", i) for i in range(BATCH)]} for call in range(calls)
    ]
    times = []
    t0 = time.perf_counter()
    for body in bodies:
        c0 = time.perf_counter()
        answer = poseidon.urlopen(DEMO_APP_KEY, DEMO_APP_SECRET, endpoint, data=body, timeout=60)
        times.append(time.perf_counter() - c0)
        if not isinstance(answer, dict) or answer.get("code") != 0:
            raise BenchError(f"the SDK call failed: {str(answer)[:300]}")
        if answer.get("successSize") != BATCH:
            raise BenchError(f"the SDK call did not create every device: {str(answer)[:300]}")
    wall = time.perf_counter() - t0
    return SdkRun(calls, calls * BATCH, wall, times)


# ------------------------------------------------------------------------------- a job run
@dataclass
class CpuSnapshot:
    worker: float
    beat: float
    postgres: float
    simulator: float
    redis: float


def cpu_snapshot(c: Cluster, sim: Proc) -> CpuSnapshot:
    return CpuSnapshot(
        worker=tree_cpu_s(c.worker.pid),
        beat=tree_cpu_s(c.beat.pid),
        postgres=sum(tree_cpu_s(pid) for pid in postgres_roots()),
        simulator=tree_cpu_s(sim.pid),
        redis=sum(tree_cpu_s(pid) for pid in pids_named("redis-server")),
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
    intake_s: float  # created_at -> started_at (the file read, rows and chunks committed)
    send_s: float  # started_at -> finished_at
    cli_cpu_s: float
    cli_rss_mb: float
    cpu: CpuSnapshot
    rss: dict[str, list[float]] = field(default_factory=dict)
    call_s: list[float] = field(default_factory=list)
    load_before: str = ""
    sim_rss_mb: float = 0.0

    @property
    def e2e_rate(self) -> float:
        return self.devices / self.e2e_s

    @property
    def send_rate(self) -> float:
        return self.devices / self.send_s

    def us(self, seconds: float) -> float:
        return seconds * 1e6 / self.devices

    @property
    def ours_cpu_s(self) -> float:
        return self.cpu.worker + self.cpu.beat + self.cli_cpu_s

    @property
    def max_rss_mb(self) -> float:
        return max([self.cli_rss_mb, *(v for vs in self.rss.values() for v in vs)])


def run_job(
    label: str,
    path: Path,
    devices: int,
    c: Cluster,
    sim: Proc,
    env: dict[str, str],
    workdir: Path,
    db: Engine,
    rss: PeakRss,
    timeout_s: float,
) -> JobRun:
    load_before = Path("/proc/loadavg").read_text().split()[0]
    rss.reset()
    rss.track("worker", c.worker.pid)
    rss.track("beat", c.beat.pid)
    before = cpu_snapshot(c, sim)
    out_path, err_path = workdir / f"{label}.out", workdir / f"{label}.err"
    t0 = time.perf_counter()
    with out_path.open("wb") as out, err_path.open("wb") as err:
        cli = subprocess.Popen(
            [str(BIN / "enos-import"), "submit", str(path), "--org", ORG, "--wait"],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    rss.track("cli", cli.pid)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            pid, wait_status, usage = os.wait4(cli.pid, os.WNOHANG)
            if pid:
                cli.returncode = os.waitstatus_to_exitcode(wait_status)
                break
            for proc in c.procs:
                proc.check()
            if time.monotonic() > deadline:
                raise BenchError(f"{label}: the job did not end within {timeout_s:.0f} s")
            time.sleep(0.05)
    finally:
        if cli.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(cli.pid, signal.SIGKILL)
            cli.wait(10)
    wall = time.perf_counter() - t0
    after = cpu_snapshot(c, sim)
    rss.untrack("cli")
    rss.sample()
    stdout = out_path.read_text()
    job_id = stdout.splitlines()[0].strip() if stdout else ""
    if cli.returncode != 0 or not job_id:
        raise BenchError(
            f"{label}: submit exited {cli.returncode}\n{stdout[-500:]}\n"
            f"{err_path.read_text()[-2000:]}"
        )
    with db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, created + adopted AS ok, total, "
                "extract(epoch from finished_at - created_at) AS e2e, "
                "extract(epoch from started_at - created_at) AS intake, "
                "extract(epoch from finished_at - started_at) AS send "
                "FROM import_job_status WHERE job_id = :id"
            ),
            {"id": job_id},
        ).one()
    if row.status != "completed" or row.ok != devices or row.total != devices:
        raise BenchError(
            f"{label}: job {job_id} ended {row.status} with {row.ok}/{devices} created"
        )
    cpu = CpuSnapshot(
        worker=after.worker - before.worker,
        beat=after.beat - before.beat,
        postgres=after.postgres - before.postgres,
        simulator=after.simulator - before.simulator,
        redis=after.redis - before.redis,
    )
    peaks = rss.by_label()
    peaks.pop("cli", None)
    return JobRun(
        label=label,
        pool=c.pool,
        devices=devices,
        status=row.status,
        created=int(row.ok),
        wall_s=wall,
        e2e_s=float(row.e2e),
        intake_s=float(row.intake),
        send_s=float(row.send),
        cli_cpu_s=usage.ru_utime + usage.ru_stime,
        cli_rss_mb=usage.ru_maxrss / 1024,
        cpu=cpu,
        rss=peaks,
        call_s=call_times(c.worker.log, job_id),
        load_before=load_before,
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


# ---------------------------------------------------------------------------------- report
def machine() -> dict[str, str]:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal:")
    )
    engine = create_engine(ADMIN_URL)
    try:
        with engine.connect() as conn:
            pg = str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()
    return {
        "cpus": str(os.cpu_count()),
        "cpu": model,
        "memory": f"{mem_kb / 1024 / 1024:.1f} GiB",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "postgres": pg,
        "os": f"{platform.system()} {platform.release()}",
    }


def code_version() -> str:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
            check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "worker", "bench"], cwd=ROOT,
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{commit} (with uncommitted changes)" if dirty else commit


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


@dataclass
class Results:
    command: str
    probe_s: list[float]
    sdk: SdkRun
    runs: list[JobRun]
    memory: JobRun | None
    started: str
    notes: list[str] = field(default_factory=list)

    @property
    def call_s(self) -> float:
        return mean(self.probe_s)

    @property
    def bound(self) -> float:
        return CONCURRENCY * BATCH / self.call_s


def section(res: Results) -> str:
    info = machine()
    bound = res.bound
    lines = [
        SECTION,
        "",
        f"Measured {res.started} on code {code_version()} by `{res.command}` "
        "(also part of `make bench`).",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['os']}, "
        f"{info['python']}, PostgreSQL {info['postgres']}; everything on loopback.",
        "",
        "Set-up: a fresh PostgreSQL database `enos_import_bench` (`enos-import db upgrade`), Redis "
        "database 12 (flushed before each set of workers) as the broker, `enos-import simulator "
        f'--seed-demo --faults "{FAULTS}" --product-cap {CAP} --ou-cap {CAP}` (each '
        f"1,000-device call waits 0.5 s + 1,000 x 0.5 ms), `celery -A worker.celery_app worker "
        f"--pool <pool> --concurrency {CONCURRENCY}` plus `celery -A worker.celery_app beat`, "
        f"default settings otherwise (batch {BATCH:,}, `MAX_CONCURRENCY` {CONCURRENCY}, window "
        f"{2 * CONCURRENCY}). Each job is a CSV of three products (deviceKey, name with a zh_CN "
        "translation, timezone, description, two attributes, two tags) given to `enos-import "
        f"submit FILE --org {ORG} --wait`; a {WARMUP_DEVICES:,}-device warm-up job runs on the "
        "same workers first and is not counted. Times come from the job row (database clock): "
        "*end to end* is `created_at → finished_at` (reading the file included), *sending* is "
        "`started_at → finished_at` (intake committed → last outcome written). CPU is user + "
        "system time from `/proc/<pid>/stat` (reaped children included) over the job, for the "
        "worker's process tree, beat, and the CLI (its whole life, start-up included, from "
        "`wait4`); PostgreSQL is every `postgres` process of the server (the whole server: other "
        "databases' work during the run would count too). Peak RSS is `VmHWM` of each process, "
        "sampled every 0.25 s and at the end (CLI: `ru_maxrss`).",
        "",
        f"Call time of one 1,000-device batchCreate, sequential from the bench with the service's "
        f"client: {', '.join(f'{t:.3f}' for t in res.probe_s)} s (mean {res.call_s:.3f} s), so the "
        f"bound is {CONCURRENCY} x {BATCH:,} / {res.call_s:.3f} s = **{bound:,.0f} devices/s**; "
        f"90% of it is {BOUND_FRACTION * bound:,.0f}.",
        "",
        f"Official SDK baseline (`poseidon.urlopen`, `enos-poseidon`), {res.sdk.calls} sequential "
        f"calls of {BATCH:,} devices: {res.sdk.wall_s:.2f} s, **{res.sdk.devices_per_s:,.0f} "
        f"devices/s** (call time mean {mean(res.sdk.call_s):.3f} s); 5x is "
        f"{SDK_FACTOR * res.sdk.devices_per_s:,.0f} devices/s.",
        "",
        "| run | pool | devices | end to end s | intake s | sending s | devices/s end to end "
        "| devices/s sending | % of bound (sending) | x SDK (sending) | in-run call s "
        "| workers µs/dev | beat µs/dev | CLI µs/dev | **ours µs/dev** | PostgreSQL µs/dev "
        "| simulator µs/dev | Redis µs/dev | peak RSS MB (largest) | load before |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in [*res.runs, *([res.memory] if res.memory else [])]:
        calls = f"{mean(r.call_s):.3f}" if r.call_s else "-"
        lines.append(
            f"| {r.label} | {r.pool} {CONCURRENCY} | {r.devices:,} | {r.e2e_s:.2f} "
            f"| {r.intake_s:.2f} | {r.send_s:.2f} | {r.e2e_rate:,.0f} | {r.send_rate:,.0f} "
            f"| {100 * r.send_rate / bound:.1f}% | {r.send_rate / res.sdk.devices_per_s:.1f} "
            f"| {calls} | {r.us(r.cpu.worker):.1f} | {r.us(r.cpu.beat):.1f} "
            f"| {r.us(r.cli_cpu_s):.1f} | **{r.us(r.ours_cpu_s):.1f}** "
            f"| {r.us(r.cpu.postgres):.1f} | {r.us(r.cpu.simulator):.1f} "
            f"| {r.us(r.cpu.redis):.1f} | {r.max_rss_mb:.0f} | {r.load_before} |"
        )
    lines += ["", "Against the targets:", ""]
    lines += [
        "| target | measured | result |",
        "|---|---|---|",
    ]
    for r in res.runs:
        lines.append(
            f"| throughput ≥ 90% of the bound ({BOUND_FRACTION * bound:,.0f}/s), {r.pool} 8, "
            f"sending | {r.send_rate:,.0f}/s ({100 * r.send_rate / bound:.1f}%) "
            f"| {verdict(r.send_rate >= BOUND_FRACTION * bound)} |"
        )
        lines.append(
            f"| same, end to end (file read included), {r.pool} 8 | {r.e2e_rate:,.0f}/s "
            f"({100 * r.e2e_rate / bound:.1f}%) | {verdict(r.e2e_rate >= BOUND_FRACTION * bound)} |"
        )
        lines.append(
            f"| ≥ 5x the SDK loop ({SDK_FACTOR * res.sdk.devices_per_s:,.0f}/s), {r.pool} 8 "
            f"| {r.send_rate / res.sdk.devices_per_s:.1f}x sending, "
            f"{r.e2e_rate / res.sdk.devices_per_s:.1f}x end to end "
            f"| {verdict(r.e2e_rate >= SDK_FACTOR * res.sdk.devices_per_s)} |"
        )
        lines.append(
            f"| ≤ {CPU_US_PER_DEVICE:.0f} µs CPU/device in our processes, {r.pool} 8 "
            f"| {r.us(r.ours_cpu_s):.1f} µs (PostgreSQL beside it: {r.us(r.cpu.postgres):.1f} µs) "
            f"| {verdict(r.us(r.ours_cpu_s) <= CPU_US_PER_DEVICE)} |"
        )
    if res.memory is not None:
        m = res.memory
        lines.append(
            f"| every process < {RSS_LIMIT_MB:.0f} MB resident, {m.devices:,}-device file "
            f"| largest {m.max_rss_mb:.0f} MB | {verdict(m.max_rss_mb < RSS_LIMIT_MB)} |"
        )
        lines += [
            "",
            f"Memory run: {m.devices:,} devices, simulator latency 0 (`POST /__sim/faults {{}}`), "
            f"{m.pool} {CONCURRENCY} workers started fresh for it (no warm-up): submit to end "
            f"{m.wall_s:.0f} s (intake {m.intake_s:.0f} s, sending {m.send_s:.0f} s). Peak RSS of "
            "every process of ours:",
            "",
            "| process | peak RSS MB |",
            "|---|--:|",
            f"| CLI (`enos-import submit --wait`) | {m.cli_rss_mb:.0f} |",
        ]
        for label, values in m.rss.items():
            shown = ", ".join(f"{v:.0f}" for v in values)
            lines.append(f"| {label} ({len(values)}) | {shown} |")
        lines.append(
            f"| simulator (stands in for EnOS, not ours; every device of every run) "
            f"| {m.sim_rss_mb:.0f} |"
        )
    if res.runs:
        lines += ["", "Peak RSS during the 100,000-device runs:", ""]
        for r in res.runs:
            parts = [f"CLI {r.cli_rss_mb:.0f}"] + [
                f"{label} {max(values):.0f}" for label, values in r.rss.items()
            ]
            lines.append(f"- {r.pool}: " + ", ".join(parts) + " MB.")
    if res.notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {note}" for note in res.notes]
    lines.append("")
    return "\n".join(lines)


def write_section(path: Path, body: str) -> None:
    """Replaces our section (up to the next ``## `` heading), or appends it; others stay."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("# Benchmarks\n\n" + body)
        return
    lines = path.read_text().splitlines(keepends=True)
    start_at = next((i for i, line in enumerate(lines) if line.rstrip() == SECTION), None)
    if start_at is None:
        path.write_text("".join(lines).rstrip("\n") + "\n\n" + body)
        return
    end = next(
        (i for i in range(start_at + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
    )
    tail = "".join(lines[end:])
    path.write_text("".join(lines[:start_at]) + body + ("\n" + tail if tail else ""))


def print_run(r: JobRun, bound: float, sdk: float) -> None:
    print(
        f"{r.label:>12} {r.pool:8} {r.devices:>9,} devices: end to end {r.e2e_s:6.2f} s "
        f"({r.e2e_rate:,.0f}/s), intake {r.intake_s:.2f} s, sending {r.send_s:.2f} s "
        f"({r.send_rate:,.0f}/s = {100 * r.send_rate / bound:.1f}% of bound, "
        f"{r.send_rate / sdk:.1f}x SDK); CPU µs/device: workers {r.us(r.cpu.worker):.1f}, "
        f"beat {r.us(r.cpu.beat):.1f}, CLI {r.us(r.cli_cpu_s):.1f} → ours "
        f"{r.us(r.ours_cpu_s):.1f}; postgres {r.us(r.cpu.postgres):.1f}, simulator "
        f"{r.us(r.cpu.simulator):.1f}, redis {r.us(r.cpu.redis):.1f}; peak RSS "
        f"{r.max_rss_mb:.0f} MB (CLI {r.cli_rss_mb:.0f})"
        + (f"; in-run call {mean(r.call_s):.3f} s" if r.call_s else ""),
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.import_throughput", description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000, help="devices of each timed job")
    parser.add_argument(
        "--memory-devices", type=int, default=1_000_000, help="devices of the memory run (0: skip)"
    )
    parser.add_argument("--pools", default=",".join(POOLS), help="worker pools to measure")
    parser.add_argument("--sdk-calls", type=int, default=SDK_CALLS, help="calls of the SDK loop")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = parser.parse_args(argv)
    given = argv if argv is not None else sys.argv[1:]
    command = ".venv/bin/python -m bench.import_throughput" + (
        " " + " ".join(given) if given else ""
    )
    pools = [p for p in args.pools.split(",") if p]
    for pool in pools:
        if pool not in POOLS:
            parser.error(f"unknown pool {pool!r}")
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    tag = f"b{int(time.time()) % 100000:05d}"
    runs: list[JobRun] = []
    memory: JobRun | None = None
    t_start = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep:
            tmp = tempfile.mkdtemp(prefix="enos-import-bench-")
            print(f"work folder: {tmp}")
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="enos-import-bench-"))
        rss = stack.enter_context(PeakRss())
        workdir = Path(tmp)
        db = fresh_database()
        try:
            with simulator(workdir) as (url, sim):
                env = base_env(url)
                probe = probe_call_time(url, f"{tag}-probe")
                print(f"call time (1,000 devices, sequential): {[round(t, 3) for t in probe]}")
                sdk = sdk_baseline(url, f"{tag}-sdk", args.sdk_calls)
                print(
                    f"SDK loop: {sdk.devices:,} devices in {sdk.wall_s:.2f} s = "
                    f"{sdk.devices_per_s:,.0f}/s (call mean {mean(sdk.call_s):.3f} s)",
                    flush=True,
                )
                bound = CONCURRENCY * BATCH / mean(probe)
                for pool in pools:
                    warm = write_csv(
                        workdir / f"warm-{pool}.csv", f"{tag}-w{pool[0]}", WARMUP_DEVICES
                    )
                    path = write_csv(workdir / f"run-{pool}.csv", f"{tag}-r{pool[0]}", args.devices)
                    with cluster(pool, env, workdir, db) as c:
                        run_job(f"warm-{pool}", warm, WARMUP_DEVICES, c, sim, env, workdir, db,
                                rss, 120)  # fmt: skip
                        run = run_job(f"{args.devices // 1000}k", path, args.devices, c, sim, env,
                                      workdir, db, rss, 600)  # fmt: skip
                    runs.append(run)
                    print_run(run, bound, sdk.devices_per_s)
                    path.unlink()
                if args.memory_devices:
                    path = write_csv(workdir / "memory.csv", f"{tag}-m", args.memory_devices)
                    sim_faults(url, {})
                    with cluster("prefork", env, workdir, db) as c:
                        memory = run_job(
                            f"{args.memory_devices // 1000}k memory", path, args.memory_devices,
                            c, sim, env, workdir, db, rss, 900,
                        )  # fmt: skip
                    memory.sim_rss_mb = (status_kb(sim.pid, "VmHWM") or 0) / 1024
                    print_run(memory, bound, sdk.devices_per_s)
                    path.unlink()
        finally:
            db.dispose()
            with contextlib.suppress(Exception):
                drop_database()
    print(f"bench took {time.monotonic() - t_start:.0f} s")
    res = Results(command, probe, sdk, runs, memory, started)
    text_out = section(res)
    if args.no_write:
        print("\n" + text_out)
    else:
        write_section(DOC, text_out)
        print(f"wrote the '{SECTION[3:]}' section of {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
