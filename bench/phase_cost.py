"""CPU per device of each phase, in one process: the intake, then sending every chunk in turn.

No Celery and no concurrency: the figures are the import's own code and its database work,
without the workers' task overhead or contention. The simulator runs without latency on a
loopback port (a real HTTP server); the database is a fresh ``phase_cost`` database on the local
PostgreSQL server, migrated. Our CPU is this process's (``time.process_time``), the database's
the CPU of its backends (``bench.pg_cpu``). Prints one line per round.

Run: ``.venv/bin/python -m bench.phase_cost [--devices N] [--rounds N]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.pg_cpu import BackendCpu
from bench.throughput.config import BATCH, ORG
from bench.throughput.inputs import write_csv
from bench.throughput.services import simulator
from worker.context import WorkerContext
from worker.db.migrate import upgrade
from worker.db.session import Database
from worker.importer.budget import LocalBudget
from worker.importer.send import send_chunk
from worker.importer.submit import create, job_options, run_intake
from worker.logs import configure as configure_logging
from worker.readers.sources import open_source
from worker.runtime import make_client
from worker.settings import Settings
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET

ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
DATABASE = "phase_cost"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure_logging("WARNING", "console")  # one line per round, not one per chunk
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {DATABASE}"))
        conn.execute(text(f"CREATE DATABASE {DATABASE}"))
    admin.dispose()
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{DATABASE}"
    upgrade(url)
    with (
        tempfile.TemporaryDirectory(prefix="phase-cost-") as folder,
        simulator(Path(folder), faults="") as (api, _),
    ):
        db = Database(url)
        settings = Settings(
            database_url=url, api_url=api, access_key=DEMO_APP_KEY, secret_key=DEMO_APP_SECRET,
            org_id=ORG, batch_size=BATCH,
        )  # fmt: skip
        ctx = WorkerContext(
            db=db,
            client=make_client(settings),
            settings=settings,
            budget=LocalBudget(8, 10),
            owner="phase-cost:1",
        )
        for round_ in range(1, args.rounds + 1):
            print(measure(ctx, Path(folder), round_, args.devices))
        db.dispose()


def measure(ctx: WorkerContext, folder: Path, round_: int, devices: int) -> str:
    db, settings = ctx.db, ctx.settings
    path = write_csv(folder / f"round-{round_}.csv", f"pc{int(time.time())}r{round_}", devices)
    job_id = str(uuid.uuid4())
    options = job_options(settings, require_secret=False, intake="cli")
    create(db, settings, job_id, ORG, str(path), options)
    chunk_ids: list[int] = []
    with BackendCpu(ADMIN_URL, DATABASE) as intake_db:
        started = time.process_time()
        run_intake(db, settings, job_id, ORG, open_source(path), options, publish=chunk_ids.extend)
        intake_ours = time.process_time() - started
    with db.read() as session:
        chunk_ids = [
            row[0]
            for row in session.execute(
                text("SELECT id FROM import_chunks WHERE job_id = :j ORDER BY seq"), {"j": job_id}
            )
        ]
    with BackendCpu(ADMIN_URL, DATABASE) as send_db:
        started = time.process_time()
        for chunk_id in chunk_ids:
            send_chunk(ctx, chunk_id)
        send_ours = time.process_time() - started

    def us(seconds: float) -> str:
        return f"{seconds * 1e6 / devices:5.1f}"

    return (
        f"round {round_}, {devices:,} devices, µs CPU per device: intake ours {us(intake_ours)}, "
        f"PostgreSQL {us(intake_db.seconds)}; sending ours {us(send_ours)}, "
        f"PostgreSQL {us(send_db.seconds)}"
    )


if __name__ == "__main__":
    main()
