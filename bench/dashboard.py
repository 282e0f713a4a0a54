"""The picture of the Grafana dashboard in the README, from the metrics of a real import.

Grafana and Prometheus cannot be installed on this machine, so this draws the dashboard's panels
itself, from the same queries: it runs a real import on loopback (the simulator with throttling,
gateway errors and lost answers; a prefork Celery worker with ``/metrics``; beat; ``enos-import
metrics serve``; PostgreSQL and Redis), scrapes both ``/metrics`` endpoints every second as
Prometheus would, evaluates each panel's PromQL over those scrapes (``bench/promql.py``), runs
each SQL panel's query against the views, and renders the panels with matplotlib
(``bench/dashboard_render.py``) to ``docs/dashboard.png``.

    .venv/bin/python -m bench.dashboard [--devices N] [--redis-db N] [--out docs/dashboard.png]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text

from bench import promql
from tests.harness.processes import BIN, ROOT, Proc, free_port, start, wait_until
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET

DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "enos-import.json"
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DB_NAME = "enos_import_dashboard"
DB_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DB_NAME}"
# EnOS answering a 250-device call in about 0.8 s, throttling 4% of calls, failing 3% with a
# 503 and losing 2% of answers after doing the work; a fixed seed.
FAULTS = (
    "latency_ms=300,per_device_us=2000,http429=0.04,http503=0.03,reset_after_commit=0.02,seed=11"
)
BATCH = 250
# Each product takes 9,900 devices: the rest of its 10,000 rows fail with EnOS code 11739.
PRODUCT_CAP = 9_900


def env_for(api_url: str, redis_db: int, metrics_port: int, workdir: Path) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("ENOS_IMPORT_")}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        ENOS_IMPORT_DATABASE_URL=DB_URL,
        ENOS_IMPORT_BROKER_URL=f"redis://127.0.0.1:6379/{redis_db}",
        ENOS_IMPORT_API_URL=api_url,
        ENOS_IMPORT_ACCESS_KEY=DEMO_APP_KEY,
        ENOS_IMPORT_SECRET_KEY=DEMO_APP_SECRET,
        ENOS_IMPORT_ORG_ID="o-demo",
        ENOS_IMPORT_BATCH_SIZE=str(BATCH),
        ENOS_IMPORT_METRICS_PORT=str(metrics_port),
        ENOS_IMPORT_METRICS_DIR=str(workdir / "metrics"),
        ENOS_IMPORT_BACKOFF_BASE_S="0.5",
        ENOS_IMPORT_BACKOFF_MAX_S="5",
        ENOS_IMPORT_RECONCILE_DELAY_S="0.5",
        ENOS_IMPORT_SWEEP_INTERVAL_S="2",
        ENOS_IMPORT_LOG_FORMAT="json",
        ENOS_IMPORT_LOG_LEVEL="WARNING",
    )
    return env


def fresh_database(env: dict[str, str]) -> None:
    import subprocess

    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {DB_NAME}"))
    admin.dispose()
    subprocess.run([str(BIN / "enos-import"), "db", "upgrade"], env=env, check=True, timeout=120)


def write_devices(path: Path, devices: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["productKey", "deviceKey", "deviceName", "timezone"])
        products = ("pk-meter", "pk-inverter", "pk-turbine")
        for n in range(devices):
            timezone = "GMT+8" if n % 997 == 5 else "+08:00"  # a few invalid rows
            writer.writerow([products[n % 3], f"dash-{n:07d}", f"device {n}", timezone])
    return path


def scrape(url: str) -> dict[tuple[str, promql.Labels], float]:
    response = httpx.get(url, timeout=5, trust_env=False)
    response.raise_for_status()
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples[(sample.name, labels)] = sample.value
    return samples


@contextlib.contextmanager
def services(workdir: Path, redis_db: int) -> Iterator[tuple[dict[str, str], list[str]]]:
    """The simulator, a prefork worker, beat and ``metrics serve``; yields the environment and
    the two ``/metrics`` URLs."""
    procs: list[Proc] = []
    try:
        sim_port = free_port()
        sim_argv = [str(BIN / "enos-import"), "simulator", "--port", str(sim_port),
                    "--seed-demo", "--faults", FAULTS, "--product-cap", str(PRODUCT_CAP),
                    "--ou-cap", "1000000"]  # fmt: skip
        worker_port, db_port = free_port(), free_port()
        env = env_for(f"http://127.0.0.1:{sim_port}", redis_db, worker_port, workdir)
        procs.append(start("simulator", sim_argv, env, workdir))
        fresh_database(env)
        import redis

        redis.Redis.from_url(env["ENOS_IMPORT_BROKER_URL"]).flushdb()
        celery = str(BIN / "celery")
        procs.append(start("worker", [celery, "-A", "worker.celery_app", "worker", "--pool",
                                      "prefork", "--concurrency", "10", "--loglevel", "WARNING"],
                           env, workdir))  # fmt: skip
        procs.append(start("beat", [celery, "-A", "worker.celery_app", "beat", "-s",
                                    str(workdir / "beat-schedule")], env, workdir))  # fmt: skip
        serve = [str(BIN / "enos-import"), "metrics", "serve", "--port", str(db_port),
                 "--address", "127.0.0.1"]  # fmt: skip
        procs.append(start("metrics", serve, env, workdir))
        urls = [f"http://127.0.0.1:{port}/metrics" for port in (worker_port, db_port)]
        for url in urls:
            wait_until(functools.partial(scrape, url), url, 60, procs)
        yield env, urls
    finally:
        for proc in reversed(procs):
            proc.stop()


def collect(devices: int, redis_db: int) -> tuple[promql.Series, dict[str, list[dict[str, Any]]]]:
    """Runs the import, scraping every second; returns the scrapes and the SQL panels' rows."""
    import subprocess

    series = promql.Series()
    with TemporaryDirectory(prefix="enos-dashboard-") as tmp:
        workdir = Path(tmp)
        with services(workdir, redis_db) as (env, urls):
            path = write_devices(workdir / "devices.csv", devices)
            started = time.time()
            submit = subprocess.Popen(
                [str(BIN / "enos-import"), "submit", str(path), "--wait"],
                env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            tail = 0
            while tail < 20:  # until 20 s after the job ended
                at = time.time()
                samples: dict[tuple[str, promql.Labels], float] = {}
                for url in urls:
                    samples.update(scrape(url))
                series.add(at - started, samples)
                if submit.poll() is not None:
                    tail += 1
                time.sleep(max(0.0, 1.0 - (time.time() - at)))
        tables = sql_panels()
    return series, tables


def sql_panels() -> dict[str, list[dict[str, Any]]]:
    engine = create_engine(DB_URL)
    tables = {}
    with engine.connect() as conn:
        for panel in json.loads(DASHBOARD.read_text())["panels"]:
            for target in panel["targets"]:
                if "rawSql" in target:
                    rows = conn.execute(text(target["rawSql"])).mappings().all()
                    tables[panel["title"]] = [dict(row) for row in rows]
    engine.dispose()
    return tables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=30_000)
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = parser.parse_args()
    from bench.dashboard_render import render

    series, tables = collect(args.devices, args.redis_db)
    render(json.loads(DASHBOARD.read_text()), series, tables, args.out, args.devices)
    print(f"wrote {args.out} ({len(series.scrapes)} scrapes)")


if __name__ == "__main__":
    main()
