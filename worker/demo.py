"""``make demo``: a real import against the local EnOS simulator, on the embedded default.

Starts the simulator on a loopback port (demo account, in memory), runs ``enos-import run`` on
``examples/devices.csv`` (a real Celery worker in-process, a local SQLite file), writes the
results file, prints a summary, and stops the simulator. Needs no services.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import create_engine, text

from worker.host import free_port
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG

ROOT = Path(__file__).resolve().parent.parent
FILE = ROOT / "examples" / "devices.csv"
WORK = ROOT / ".demo"
BIN = Path(sys.executable).parent


def main() -> int:
    console = Console(stderr=True)
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    simulator = subprocess.Popen(
        [str(BIN / "enos-import"), "simulator", "--port", str(port), "--seed-demo",
         "--private-key-out", str(WORK / "demo-private-key.pem")],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(api)
        env = {
            **os.environ,
            "ENOS_IMPORT_API_URL": api,
            "ENOS_IMPORT_ACCESS_KEY": DEMO_APP_KEY,
            "ENOS_IMPORT_SECRET_KEY": DEMO_APP_SECRET,
            "ENOS_IMPORT_ORG_ID": DEMO_ORG,
            "ENOS_IMPORT_DATABASE_URL": f"sqlite:///{WORK / 'enos-import.db'}",
            "ENOS_IMPORT_LOG_LEVEL": "WARNING",
        }
        console.print(f"simulator at {api}; importing {FILE.relative_to(ROOT)} into {DEMO_ORG}")
        started = time.monotonic()
        run = subprocess.run(
            [str(BIN / "enos-import"), "run", str(FILE)],
            env=env, stdout=subprocess.PIPE, text=True, check=False,
        )  # fmt: skip
        elapsed = time.monotonic() - started
        job_id = run.stdout.splitlines()[0] if run.stdout else ""
        if run.returncode not in (0, 3) or not job_id:
            console.print(f"[red]the import failed (exit {run.returncode})")
            return 1
        results = WORK / "results.csv"
        subprocess.run(
            [str(BIN / "enos-import"), "results", job_id, "-o", str(results)],
            env=env, check=True,
        )  # fmt: skip
        stats = httpx.get(f"{api}/__sim/stats").json()
    finally:
        simulator.terminate()
        simulator.wait(10)
    _summary(Console(), job_id, elapsed, stats["devices"], results)
    return 0


def _summary(console: Console, job_id: str, elapsed: float, on_enos: int, results: Path) -> None:
    engine = create_engine(f"sqlite:///{WORK / 'enos-import.db'}")
    with engine.connect() as conn:
        job = (
            conn.execute(text("SELECT * FROM import_job_status WHERE job_id = :id"), {"id": job_id})
            .mappings()
            .one()
        )
        by_product = conn.execute(
            text(
                "SELECT coalesce(product_key, '(none)') AS product, status, count(*) AS n "
                "FROM import_device_outcome WHERE job_id = :id GROUP BY 1, 2 ORDER BY 1, 2"
            ),
            {"id": job_id},
        ).all()
        invalid = conn.execute(
            text(
                "SELECT line_no, error_message FROM import_device_outcome "
                "WHERE job_id = :id AND status = 'invalid' ORDER BY line_no"
            ),
            {"id": job_id},
        ).all()
    engine.dispose()
    console.print(f"job {job_id}: [bold]{job['status']}[/] in {elapsed:.1f} s")
    table = Table()
    for column in ("product", "status", "devices"):
        table.add_column(column)
    for product, status, count in by_product:
        table.add_row(product, status, str(count))
    console.print(table)
    console.print("invalid rows (the valid rows imported regardless):")
    for _, message in invalid:
        console.print(f"  {message}", highlight=False)
    console.print(
        f"{job['created']} created, {job['adopted']} adopted; EnOS now holds {on_enos} devices."
    )
    console.print(f"results: {results}")


def _wait_for(api: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{api}/__sim/stats", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the simulator did not start")


if __name__ == "__main__":
    sys.exit(main())
