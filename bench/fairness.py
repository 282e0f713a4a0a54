"""Fair sharing: a small job submitted while a big job of the same org runs.

The simulator answers as the import benchmark's does (``latency_ms=500,per_device_us=500``), the
workers run as deploy/ runs them (prefork 10, 8 calls in flight). A 2,000-device job is timed
alone, then again while a 500,000-device job of the same org is sending; its time beside the big
one must stay under 3x its time alone. Times are the database's: from the job's creation to its
final state.

Run: ``.venv/bin/python -m bench.fairness`` (part of ``make bench``; ``--big 100000`` for a
shorter run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import subprocess
import tempfile
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine

from bench.throughput.config import DOC, ORG
from bench.throughput.inputs import write_csv
from bench.throughput.jobs import Bench
from bench.throughput.report import machine_with_postgres
from bench.throughput.samplers import PeakRss
from bench.throughput.services import (
    Workers,
    cluster,
    drop_database,
    fresh_database,
    import_env,
    servers,
    simulator,
)
from tests.harness.docs import write_section
from tests.harness.processes import BIN, ROOT

SECTION = "## Fair sharing between jobs of one org"
FINAL = ("completed", "completed_with_errors", "failed", "cancelled")
TARGET = 3.0
WORKERS = Workers("prefork", 10)


def submit(bench: Bench, path: Path, wait: bool) -> tuple[str, subprocess.Popen[bytes] | None]:
    """``enos-import submit`` of ``path``; with ``wait``, to the job's end."""
    argv = [str(BIN / "enos-import"), "submit", str(path), "--org", ORG]
    out = bench.workdir / f"{path.stem}.out"
    with out.open("wb") as handle:
        proc = subprocess.Popen(
            [*argv, *(["--wait"] if wait else [])],
            env=bench.env,
            cwd=bench.workdir,
            stdin=subprocess.DEVNULL,
            stdout=handle,
            stderr=subprocess.DEVNULL,
        )
    if wait:
        proc.wait(600)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        first = out.read_text().split("\n", 1)[0].strip()
        if len(first) == 36:
            return first, None if wait else proc
        time.sleep(0.1)
    raise RuntimeError(f"submit of {path.name} printed no job id")


def job_seconds(db: Engine, job_id: str) -> tuple[str, float]:
    with db.connect() as conn:
        row = conn.execute(
            text(
                "SELECT status, extract(epoch from finished_at - created_at) FROM import_jobs "
                "WHERE id = :id"
            ),
            {"id": job_id},
        ).one()
    return str(row[0]), float(row[1] or 0.0)


def sending(db: Engine, job_id: str) -> bool:
    with db.connect() as conn:
        done = conn.execute(
            text("SELECT count(*) FROM import_chunks WHERE job_id = :id AND status = 'done'"),
            {"id": job_id},
        ).scalar_one()
    return int(done) > 0


def measure(big: int, small: int, workdir: Path) -> dict[str, float | str]:
    tag = f"f{int(time.time()) % 100000:05d}"
    with servers() as found, PeakRss() as rss:
        db = fresh_database(found)
        try:
            with simulator(workdir) as (url, sim):
                bench = Bench(found, sim, import_env(url, found), workdir, db, rss)
                with cluster(WORKERS, bench.env, workdir, db):
                    warm = write_csv(workdir / "warm.csv", f"{tag}-w", 20_000)
                    submit(bench, warm, wait=True)
                    alone_id, _ = submit(
                        bench, write_csv(workdir / "a.csv", f"{tag}-a", small), True
                    )
                    big_path = write_csv(workdir / "big.csv", f"{tag}-b", big)
                    big_id, big_proc = submit(bench, big_path, wait=False)
                    deadline = time.monotonic() + 300
                    while not sending(db, big_id) and time.monotonic() < deadline:
                        time.sleep(0.2)
                    time.sleep(5)  # well into the big job's sending
                    beside_id, _ = submit(
                        bench, write_csv(workdir / "s.csv", f"{tag}-s", small), True
                    )
                    if big_proc is not None:
                        big_proc.wait(600)  # the intake; the job goes on in the workers
                    deadline = time.monotonic() + 1800
                    while job_seconds(db, big_id)[0] not in FINAL and time.monotonic() < deadline:
                        time.sleep(1.0)
                    alone = job_seconds(db, alone_id)
                    beside = job_seconds(db, beside_id)
                    big_state = job_seconds(db, big_id)
            info = machine_with_postgres(found.admin_url)
        finally:
            db.dispose()
            with contextlib.suppress(Exception):
                drop_database(found)
    return {
        "alone_s": alone[1],
        "beside_s": beside[1],
        "big_s": big_state[1],
        "states": f"{alone[0]}, {beside[0]}, {big_state[0]}",
        "machine": ", ".join(f"{k} {v}" for k, v in info.items()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--big", type=int, default=500_000)
    parser.add_argument("--small", type=int, default=2_000)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = Path("/proc/loadavg").read_text().split()[0]
    with tempfile.TemporaryDirectory(prefix="enos-import-fair-") as tmp:
        got = measure(args.big, args.small, Path(tmp))
    ratio = float(got["beside_s"]) / max(float(got["alone_s"]), 1e-9)
    ok = ratio < TARGET
    lines = [
        SECTION,
        "",
        f"`.venv/bin/python -m bench.fairness --big {args.big}` on {started}; machine: "
        f"{got['machine']}; 1-minute load average before: {load}.",
        "",
        "| job | time (s) |",
        "|---|---|",
        f"| {args.small:,} devices alone | {float(got['alone_s']):.1f} |",
        f"| {args.small:,} devices beside {args.big:,} of the same org | "
        f"{float(got['beside_s']):.1f} |",
        f"| the {args.big:,}-device job | {float(got['big_s']):.1f} |",
        "",
        f"Beside / alone: **{ratio:.2f}x** (target < {TARGET:.0f}x): "
        f"**{'pass' if ok else 'fail'}**. Final states: {got['states']}.",
        "",
    ]
    text_out = "\n".join(lines)
    print(text_out)
    if not args.no_write:
        write_section(DOC, SECTION, text_out)
        print(f"wrote the '{SECTION[3:]}' section of {DOC.relative_to(ROOT)}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
