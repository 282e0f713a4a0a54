"""The fault scenario: one import of N devices while everything that can break, breaks.

Real processes throughout: a private Redis and PostgreSQL, two Celery workers (prefork) and beat,
the simulator with ``--auth strict`` injecting every EnOS fault. During the import the scenario
SIGKILLs prefork children and whole workers, restarts Redis and flushes it once, restarts
PostgreSQL and terminates the workers' backends. Then, with no manual step, it checks that every
row is final, that EnOS holds exactly one device per valid row and no other, that the database's
assetIds are EnOS's, and that the job's counts are its rows'. Each fault's recovery time is the
time from the fault until rows settle again.

Run alone: ``python -m tests.faults.scenario --devices 100000`` (what ``make test-faults`` does).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from tests.faults.checks import DEFAULT_PRODUCT_CAP, Expected, check
from tests.faults.report import Event, Report, write_results
from tests.faults.services import Simulator
from tests.harness.processes import BIN, Proc, base_env, wait_until
from tests.harness.services import PrivatePostgres, PrivateRedis
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET

PRODUCTS = ("pk-meter", "pk-inverter", "pk-turbine")
EVENTS = (
    "kill_child", "terminate_backends", "kill_worker", "restart_redis", "kill_child",
    "restart_postgres", "flush_redis", "kill_worker", "terminate_backends", "kill_child",
)  # fmt: skip
SIM_FAULTS = (
    "latency_ms=400,per_device_us=500,http500=0.03,http503=0.03,http429=0.03,"
    "timeout_after_commit=0.03,reset_before_commit=0.03,reset_after_commit=0.03,"
    "item11714=0.05,retry_after_s=1,seed={seed}"
)
PATCHES = Path(__file__).with_name("patches")


class Scenario:
    """``capped``: the file has two products and more rows than their default room, so that
    the product-full answer (11739) meets lost answers and chunks in flight."""

    def __init__(
        self,
        root: Path,
        devices: int,
        seed: int = 7,
        patch: str | None = None,
        capped: bool = False,
    ) -> None:
        self.root = root
        self.devices = devices
        self.seed = seed
        self.rand = random.Random(seed)
        self.capped = capped
        self.products = PRODUCTS[:2] if capped else PRODUCTS
        self.redis = PrivateRedis(root, durable=True)
        self.postgres = PrivatePostgres(root)
        cap = DEFAULT_PRODUCT_CAP if capped else 10_000_000
        self.simulator = Simulator(root, SIM_FAULTS.format(seed=seed), product_cap=cap)
        self.patch = patch
        self.workers: dict[str, Proc] = {}
        self.beat: Proc | None = None
        self.generation = 0

    # --------------------------------------------------------------------------- processes
    def env(self) -> dict[str, str]:
        env = base_env()
        env.update(
            ENOS_IMPORT_DATABASE_URL=self.postgres.url,
            ENOS_IMPORT_BROKER_URL=self.redis.url,
            ENOS_IMPORT_API_URL=self.simulator.url,
            ENOS_IMPORT_ACCESS_KEY=DEMO_APP_KEY,
            ENOS_IMPORT_SECRET_KEY=DEMO_APP_SECRET,
            ENOS_IMPORT_ORG_ID="o-demo",
            ENOS_IMPORT_BATCH_SIZE="100",
            ENOS_IMPORT_MAX_CONCURRENCY="8",
            ENOS_IMPORT_BACKOFF_BASE_S="0.25",
            ENOS_IMPORT_BACKOFF_MAX_S="4",
            ENOS_IMPORT_RECONCILE_DELAY_S="0.5",
            ENOS_IMPORT_REPUBLISH_AFTER_S="10",
            ENOS_IMPORT_SWEEP_INTERVAL_S="1",
            ENOS_IMPORT_MAX_ATTEMPTS="60",
            ENOS_IMPORT_LOG_FORMAT="json",
            ENOS_IMPORT_LOG_LEVEL="INFO",
        )
        if self.patch:
            env["PYTHONPATH"] = f"{PATCHES}{os.pathsep}{env.get('PYTHONPATH', '')}"
            env["FAULTS_PATCH"] = self.patch
        return env

    def start(self) -> None:
        self.redis.start()
        self.postgres.start()
        self.simulator.start()
        subprocess.run(
            [str(BIN / "enos-import"), "db", "upgrade"],
            env=self.env(), cwd=self.root, check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        for name in ("a", "b"):
            self.start_worker(name)
        self.beat = Proc(
            "beat",
            [str(BIN / "celery"), "-A", "worker.celery_app", "beat", "--loglevel", "INFO",
             "-s", str(self.root / "celerybeat-schedule")],
            self.env(), self.root, self.root / "beat.log",
        )  # fmt: skip
        self.beat.start()

    def start_worker(self, name: str) -> None:
        self.generation += 1
        worker = Proc(
            f"worker-{name}",
            [str(BIN / "celery"), "-A", "worker.celery_app", "worker", "--loglevel", "INFO",
             "--pool", "prefork", "--concurrency", "4", "-n", f"{name}{self.generation}@%h"],
            self.env(), self.root, self.root / f"worker-{name}.log",
        )  # fmt: skip
        worker.start()
        self.workers[name] = worker
        wait_until(lambda: len(worker.children()) >= 4, f"worker {name}", 60, [worker])

    def stop(self) -> None:
        for worker in self.workers.values():
            worker.kill()
        if self.beat is not None:
            self.beat.kill()
        self.simulator.stop()
        self.redis.stop()
        self.postgres.stop()

    # -------------------------------------------------------------------------------- input
    def expectation(self) -> Expected:
        return Expected(self.devices, self.seed, self.capped, self.products)

    def write_file(self) -> Path:
        """Devices with unique names; one in ten leaves its deviceKey to EnOS; a few are bad."""
        path = self.root / "devices.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["productKey", "deviceKey", "deviceName", "timezone", "attr.n"])
            for n in range(1, self.devices + 1):
                key = "" if n % 10 == 0 else f"fk-{self.seed}-{n:07d}"
                timezone = "+08:00" if n % 997 else "GMT+8"  # a few invalid rows
                product = self.products[n % len(self.products)]
                writer.writerow([product, key, f"device {self.seed}-{n}", timezone, n])
        return path

    # ---------------------------------------------------------------------------------- run
    def run(self, timeout_s: float) -> Report:
        report = Report(devices=self.devices)
        started = time.monotonic()
        path = self.write_file()
        submit = subprocess.run(
            [str(BIN / "enos-import"), "submit", str(path), "--key-mode", "platform"],
            env=self.env(), cwd=self.root, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        if submit.returncode != 0:
            raise RuntimeError(f"submit failed: {submit.stderr[-2000:]}")
        report.job_id = submit.stdout.splitlines()[0]
        engine = create_engine(self.postgres.url, pool_pre_ping=True)
        try:
            self._drive(engine, report, started + timeout_s)
            report.elapsed_s = time.monotonic() - started
            check(engine, report, self.expectation(), self.simulator)
        finally:
            engine.dispose()
        return report

    def _settled(self, engine: Any, job_id: str) -> tuple[int, str]:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT j.status, (SELECT count(*) FROM import_items i "
                    "WHERE i.job_id = j.id AND i.status <> 'pending') "
                    "FROM import_jobs j WHERE j.id = :id"
                ),
                {"id": job_id},
            ).one()
        return int(row[1]), str(row[0])

    def _poll(self, engine: Any, job_id: str) -> tuple[int, str] | None:
        try:
            return self._settled(engine, job_id)
        except Exception:
            return None

    def _drive(self, engine: Any, report: Report, deadline: float) -> None:
        pending_events = list(EVENTS)
        open_events: list[Event] = []
        last_settled = 0
        while time.monotonic() < deadline:
            polled = self._poll(engine, report.job_id)
            now = time.monotonic()
            if polled is not None:
                settled, status = polled
                if settled > last_settled:
                    for event in open_events:
                        event.settled_at = now
                    open_events.clear()
                    last_settled = settled
                self._note_recoveries(engine, report, now)
                if status in ("completed", "completed_with_errors", "failed", "cancelled"):
                    report.status = status
                    self._note_recoveries(engine, report, now, final=True)
                    return
                fraction = settled / self.devices
                step = len(EVENTS) - len(pending_events) + 1
                if pending_events and fraction >= step / (len(EVENTS) + 2):
                    event = Event(pending_events.pop(0), now)
                    event.tokens = self._in_flight(engine, report.job_id)
                    event.affected = set(event.tokens)
                    event.detail = self._inject(event.name)
                    event.at = time.monotonic()
                    report.events.append(event)
                    open_events.append(event)
            time.sleep(0.2)
        tails = "\n".join(f"--- {n}\n{w.tail()}" for n, w in self.workers.items())
        raise TimeoutError(f"job {report.job_id} did not end in time\n{tails}")

    def _in_flight(self, engine: Any, job_id: str) -> dict[int, int]:
        """The chunks in flight or published, with their fencing tokens."""
        try:
            with engine.connect() as conn:
                rows = conn.execute(
                    text(
                        "SELECT id, fencing_token FROM import_chunks WHERE job_id = :id AND "
                        "(status = 'in_flight' OR (status = 'pending' AND published_at IS NOT "
                        "NULL))"
                    ),
                    {"id": job_id},
                )
                return {int(row[0]): int(row[1]) for row in rows}
        except Exception:
            return {}

    def _note_recoveries(
        self, engine: Any, report: Report, now: float, final: bool = False
    ) -> None:
        waiting = [e for e in report.events if e.done_at is None]
        if not waiting:
            return
        if final:
            for event in waiting:
                event.done_at = now
                event.resent_at = event.resent_at or now
            return
        ids = set().union(*(e.affected for e in waiting))
        try:
            with engine.connect() as conn:
                still = {
                    int(row[0]): int(row[1])
                    for row in conn.execute(
                        text(
                            "SELECT id, fencing_token FROM import_chunks WHERE id = ANY(:ids) "
                            "AND status IN ('in_flight', 'pending')"
                        ),
                        {"ids": list(ids)},
                    )
                }
        except Exception:
            return
        for event in waiting:
            if event.resent_at is None and all(
                still.get(chunk, token + 1) > token for chunk, token in event.tokens.items()
            ):
                event.resent_at = now
            if not event.affected & set(still):
                event.done_at = now
                event.resent_at = event.resent_at or now

    def _inject(self, name: str) -> str:
        if name == "kill_child":
            worker_name = self.rand.choice(sorted(self.workers))
            children = self.workers[worker_name].children()
            if not children:
                return "no child to kill"
            victim = self.rand.choice(children)
            os.kill(victim, signal.SIGKILL)
            return f"SIGKILL prefork child {victim} of worker {worker_name}"
        if name == "kill_worker":
            worker_name = self.rand.choice(sorted(self.workers))
            self.workers[worker_name].kill(signal.SIGKILL)
            self.start_worker(worker_name)
            return f"SIGKILL worker {worker_name} (all its processes), started a new one"
        if name == "restart_redis":
            self.redis.restart()
            return "Redis stopped and started (AOF kept its data)"
        if name == "flush_redis":
            self.redis.flushall()
            return "Redis FLUSHALL: every queued and unacked message lost"
        if name == "restart_postgres":
            self.postgres.restart()
            return "PostgreSQL restarted (fast)"
        if name == "terminate_backends":
            return f"pg_terminate_backend on {self.postgres.terminate_backends()} backends"
        raise ValueError(name)

    # -------------------------------------------------------------------------------- check


def run_scenario(
    devices: int, timeout_s: float, patch: str | None = None, capped: bool = False
) -> Report:
    with tempfile.TemporaryDirectory(prefix="enos-faults-") as tmp:
        root = Path(tmp)
        os.chmod(root, 0o755)
        scenario = Scenario(root, devices, patch=patch, capped=capped)
        try:
            scenario.start()
            return scenario.run(timeout_s)
        finally:
            scenario.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=100_000)
    parser.add_argument("--timeout", type=float, default=45 * 60)
    parser.add_argument("--patch", choices=["no-sweeper", "no-claim"], default=None)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument(
        "--capped",
        action="store_true",
        help="two products with more rows than their default room (10,000 each)",
    )
    args = parser.parse_args()
    report = run_scenario(args.devices, args.timeout, args.patch, args.capped)
    for event in report.events:
        print(
            f"{event.name:20} progress {event.progress_s or float('nan'):6.1f} s  "
            f"sent again {event.resent_s or float('nan'):6.1f} s  "
            f"recovered {event.recovery_s or float('nan'):6.1f} s  {event.detail}"
        )
    print(f"job {report.status} in {report.elapsed_s:.0f} s, rows {report.counts}, "
          f"EnOS {report.enos_devices}")  # fmt: skip
    for problem in report.problems:
        print("PROBLEM:", problem)
    if args.write_docs and args.patch is None:
        capped = " --capped" if args.capped else ""
        command = f"python -m tests.faults.scenario --devices {args.devices}{capped}"
        section = "Latest results, products over their room" if args.capped else "Latest results"
        write_results(report, Path("docs/reliability.md"), command, section)
    return 1 if report.problems or report.status not in ("completed_with_errors",) else 0


if __name__ == "__main__":
    sys.exit(main())
