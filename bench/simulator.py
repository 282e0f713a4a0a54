"""Throughput of the EnOS simulator: created devices per second and its CPU per device.

The simulator must never bound a benchmark of the service, so it has to create at least
``TARGET_DEVICES_PER_S`` devices per second with no latency configured. This starts the real
``enos-import simulator`` command as a subprocess (once in memory, once with ``--state``), drives
it over loopback from this process with several connections in flight, each sending prebuilt
1,000-device batchCreate bodies, and reads the simulator's CPU time from ``/proc/<pid>/stat``.
Each variant is bounded (a device count or a time limit, whichever comes first), its count is
checked against ``GET /__sim/stats``, and the results replace the "Simulator throughput" section
of ``docs/benchmarks.md``.

    .venv/bin/python -m bench.simulator            # what `make bench` runs
    .venv/bin/python -m bench.simulator --no-write # print only
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from bench.common import code_version, machine
from tests.harness.docs import write_section
from tests.harness.processes import free_port, start, wait_until

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
SECTION = "## Simulator throughput"
HOST = "127.0.0.1"
ORG = "o-demo"
PRODUCTS = ("pk-meter", "pk-inverter", "pk-turbine", "yourProductKey", "yourProductKey2")
BATCH = 1000
TARGET_DEVICES_PER_S = 20_000
CAP = 10_000_000
BATCH_PATH = f"/connect-service/v2.4/devices?action=batchCreate&orgId={ORG}"
# The official SDK's form: an access token and nothing else (the simulator's permissive auth).
HEADERS = {"apim-accesstoken": "bench-sdk-token"}
TIMEZONES = ("+08:00", "Asia/Shanghai", "Europe/Berlin", "-05:00", "America/Los_Angeles")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class BenchError(RuntimeError):
    """The simulator answered something other than every device created."""


@dataclass(frozen=True)
class Variant:
    name: str
    require_secret: bool
    devices: int


@dataclass(frozen=True)
class Result:
    store: str  # "memory" or "state file"
    variant: Variant
    devices: int
    calls: int
    wall_s: float
    sim_cpu_s: float
    client_cpu_s: float

    @property
    def devices_per_s(self) -> float:
        return self.devices / self.wall_s

    @property
    def sim_us_per_device(self) -> float:
        return self.sim_cpu_s * 1e6 / self.devices

    @property
    def client_us_per_device(self) -> float:
        return self.client_cpu_s * 1e6 / self.devices


# ----------------------------------------------------------------------------------- load
def device(run: str, i: int) -> dict[str, Any]:
    """A realistic CreateOption: i18n name, timezone, description, attributes and tags."""
    product = PRODUCTS[i % len(PRODUCTS)]
    return {
        "productKey": product,
        "deviceKey": f"bench-{run}-{i:08d}",
        "deviceName": {
            "defaultValue": f"{product} {i}",
            "i18nValue": {"en_US": f"{product} {i}", "zh_CN": f"设备 {i}"},
        },
        "timezone": TIMEZONES[i % len(TIMEZONES)],
        "deviceDesc": f"benchmark device {i} on line {i % 16}",
        "deviceAttributes": {"serialNo": f"SN-{i:010d}", "ratedPowerKw": 5.5 + i % 7, "phase": 3},
        "deviceTags": {"site": f"site-{i % 40:02d}", "region": "north", "line": f"L{i % 16}"},
    }


def bodies(run: str, devices: int, require_secret: bool) -> list[bytes]:
    """Pre-serialised batchCreate bodies of ``BATCH`` devices (the last one may be shorter)."""
    out = []
    for first in range(0, devices, BATCH):
        chunk = [device(run, i) for i in range(first, min(first + BATCH, devices))]
        out.append(orjson.dumps({"deviceList": chunk, "requireSecret": require_secret}))
    return out


def drive(port: int, batches: list[bytes], concurrency: int, seconds: float) -> tuple[int, int]:
    """Sends ``batches`` over ``concurrency`` keep-alive connections until done or out of time.

    Returns (devices created, calls made); every answer must be code 0 with every device created.
    """
    lock = threading.Lock()
    queue = iter(range(len(batches)))
    deadline = time.monotonic() + seconds
    created = [0] * concurrency
    calls = [0] * concurrency
    errors: list[BaseException] = []

    def sender(slot: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        try:
            while time.monotonic() < deadline and not errors:
                with lock:
                    index = next(queue, None)
                if index is None:
                    return
                conn.request("POST", BATCH_PATH, body=batches[index], headers=HEADERS)
                response = conn.getresponse()
                raw = response.read()
                if response.status != 200:
                    raise BenchError(f"HTTP {response.status}: {raw[:300]!r}")
                answer = orjson.loads(raw)
                total = answer.get("totalSize")
                if answer.get("code") != 0 or answer.get("successSize") != total:
                    raise BenchError(f"not every device was created: {raw[:300]!r}")
                created[slot] += total
                calls[slot] += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [
        threading.Thread(target=sender, args=(slot,), name=f"bench-sender-{slot}")
        for slot in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return sum(created), sum(calls)


# ------------------------------------------------------------------------------ simulator


def simulator_command(port: int, state: Path | None, key_path: Path) -> list[str]:
    command = [
        str(Path(sys.executable).parent / "enos-import"),
        "simulator",
        "--host",
        HOST,
        "--port",
        str(port),
        "--seed-demo",
        "--product-cap",
        str(CAP),
        "--ou-cap",
        str(CAP),
        "--private-key-out",
        str(key_path),
    ]
    if state is not None:
        command += ["--state", str(state)]
    return command


def get_json(port: int, path: str) -> Any:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        raw = response.read()
        if response.status != 200:
            raise BenchError(f"GET {path}: HTTP {response.status}")
        return orjson.loads(raw)
    finally:
        conn.close()


@contextmanager
def running_simulator(state: bool) -> Iterator[tuple[int, int]]:
    """The simulator CLI on a free loopback port; yields (port, pid) and always stops it."""
    with tempfile.TemporaryDirectory(prefix="enos-sim-bench-") as tmp:
        port = free_port()
        state_path = Path(tmp) / "simulator.db" if state else None
        argv = simulator_command(port, state_path, Path(tmp) / "demo-key.pem")
        proc = start("simulator", argv, dict(os.environ), Path(tmp))
        try:
            wait_until(lambda: get_json(port, "/__sim/stats"), "the simulator", 60, [proc], 0.05)
            yield port, proc.pid
        finally:
            proc.stop()


def process_cpu_s(pid: int) -> float:
    """User plus system CPU seconds of a process, from /proc/<pid>/stat."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[0] is field 3
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14 and 15


def measure(
    port: int, pid: int, store: str, variant: Variant, concurrency: int, seconds: float
) -> Result:
    run = f"{'s' if store != 'memory' else 'm'}{'x' if variant.require_secret else 'p'}"
    batches = bodies(run, variant.devices, variant.require_secret)
    before = get_json(port, "/__sim/stats")
    sim0, client0, wall0 = process_cpu_s(pid), time.process_time(), time.perf_counter()
    created, calls = drive(port, batches, concurrency, seconds)
    wall = time.perf_counter() - wall0
    sim_cpu, client_cpu = process_cpu_s(pid) - sim0, time.process_time() - client0
    after = get_json(port, "/__sim/stats")
    counted = after["created"] - before["created"]
    stored = after["devices"] - before["devices"]
    if counted != created or stored != created or after["item_errors"]:
        raise BenchError(
            f"{variant.name}: the client counted {created} devices, the simulator created "
            f"{counted} and holds {stored} more (item errors {after['item_errors']})"
        )
    return Result(store, variant, created, calls, wall, sim_cpu, client_cpu)


def warm_up(port: int) -> None:
    """Two small calls, so imports, the key load and the first allocations are not measured."""
    for secret in (False, True):
        drive(port, bodies(f"w{'x' if secret else 'p'}", 200, secret), 1, 60)


# ---------------------------------------------------------------------------------- report


def load_average() -> str:
    """The 1-minute load average: other work on these CPUs skews the numbers."""
    return Path("/proc/loadavg").read_text().split()[0]


def section(results: list[Result], args: argparse.Namespace, command: str, load_before: str) -> str:
    info = machine()
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    slowest = min(r.devices_per_s for r in results if not r.variant.require_secret)
    verdict = "meets" if slowest >= TARGET_DEVICES_PER_S else "does NOT meet"
    lines = [
        SECTION,
        "",
        f"Measured {now} on code {code_version()} by `{command}`.",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['os']}, "
        f"{info['python']}. 1-minute load average just before the runs: {load_before}.",
        "",
        "The real `enos-import simulator --host 127.0.0.1 --port <free port> --seed-demo "
        f"--product-cap {CAP} --ou-cap {CAP}` runs as a subprocess, once in memory and once with "
        "`--state <tmpfile>` (SQLite write-through), with no latency or faults configured. This "
        f"process drives it over loopback with {args.concurrency} keep-alive connections in "
        f"flight, each sending prebuilt {BATCH:,}-device V2.4 batchCreate bodies (distinct "
        "deviceKeys; deviceName with i18n, timezone, description, 3 attributes, 3 tags; only the "
        "`apim-accesstoken` header, permissive auth) and checking every answer is code 0 with "
        f"every device created. Each run stops at its device count or after {args.seconds:g} s; "
        "its count is checked against `GET /__sim/stats`. Simulator CPU is user + system time "
        "from `/proc/<pid>/stat` over the run (one process, one event loop); client CPU is this "
        "load generator's. A warm-up of two 200-device calls precedes the runs.",
        "",
        "| store | requireSecret | devices | calls | wall s | devices/s "
        "| simulator CPU µs/device | simulator CPU busy | client CPU µs/device |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in results:
        lines.append(
            f"| {r.store} | {str(r.variant.require_secret).lower()} | {r.devices:,} | {r.calls} "
            f"| {r.wall_s:.2f} | {r.devices_per_s:,.0f} | {r.sim_us_per_device:.1f} "
            f"| {r.sim_cpu_s / r.wall_s:.0%} | {r.client_us_per_device:.1f} |"
        )
    lines += [
        "",
        f"Target: at least {TARGET_DEVICES_PER_S:,} devices/s without requireSecret; the slowest "
        f"store reached {slowest:,.0f}, so this run {verdict} it. With requireSecret every device "
        "costs an RSA-OAEP encryption and an AES-GCM seal, hence the lower rate.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.simulator", description=__doc__)
    parser.add_argument("--devices", type=int, default=200_000, help="devices per plain run")
    parser.add_argument(
        "--secret-devices", type=int, default=20_000, help="devices per requireSecret run"
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="time limit of each run")
    parser.add_argument("--concurrency", type=int, default=4, help="connections in flight")
    parser.add_argument("--stores", default="memory,state", help="memory, state or both")
    parser.add_argument("--no-write", action="store_true", help=f"do not update {DOC.name}")
    args = parser.parse_args(argv)
    command = ".venv/bin/python -m bench.simulator" + (
        " " + " ".join(argv if argv is not None else sys.argv[1:])
        if (argv if argv is not None else sys.argv[1:])
        else ""
    )
    variants = [
        Variant("plain", False, args.devices),
        Variant("requireSecret", True, args.secret_devices),
    ]
    results: list[Result] = []
    load_before = load_average()
    for store in args.stores.split(","):
        if store not in ("memory", "state"):
            parser.error(f"unknown store {store!r}")
        label = "memory" if store == "memory" else "state file"
        with running_simulator(state=store == "state") as (port, pid):
            warm_up(port)
            for variant in variants:
                result = measure(port, pid, label, variant, args.concurrency, args.seconds)
                results.append(result)
                print(
                    f"{label:10} requireSecret={str(variant.require_secret).lower():5} "
                    f"{result.devices:>8,} devices in {result.wall_s:6.2f} s: "
                    f"{result.devices_per_s:>8,.0f} devices/s, simulator "
                    f"{result.sim_us_per_device:6.1f} µs CPU/device "
                    f"({result.sim_cpu_s / result.wall_s:.0%} busy), client "
                    f"{result.client_us_per_device:5.1f} µs/device",
                    flush=True,
                )
    text = section(results, args, command, load_before)
    if args.no_write:
        print("\n" + text)
    else:
        write_section(DOC, SECTION, text)
        print(f"wrote the '{SECTION[3:]}' section of {DOC.relative_to(ROOT)}")
    plain = [r for r in results if not r.variant.require_secret]
    return 0 if all(r.devices_per_s >= TARGET_DEVICES_PER_S for r in plain) else 1


if __name__ == "__main__":
    sys.exit(main())
