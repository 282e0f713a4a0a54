"""The database's gauges: read by the collector on PostgreSQL and SQLite, and served over HTTP by
``enos-import metrics serve``."""

from __future__ import annotations

import uuid

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

from tests.harness.processes import BIN, base_env, free_port, start, wait_until
from worker.db.clock import db_epoch
from worker.db.models import CHUNKS, ITEMS, JOBS, SERVICE_BEATS
from worker.db.session import Database
from worker.dbmetrics import DatabaseCollector


def samples(text: str) -> dict[str, float]:
    found: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return found


def fill(db: Database) -> None:
    with db.begin() as session:
        now = float(session.execute(db_epoch().select()).scalar_one())
        for status in ("running", "running", "completed", "failed"):
            job_id = str(uuid.uuid4())
            session.execute(
                insert(JOBS).values(id=job_id, status=status, org_id="o", source="f", total=3)
            )
            for line, state in enumerate(("pending", "pending", "created")):
                session.execute(
                    insert(ITEMS).values(
                        job_id=job_id, line_no=line, cells={}, status=state, chunk_seq=0
                    )
                )
            # A retry due 30 s ago, one due in an hour (not late: no lag), a first attempt
            # published 20 s ago, and one waiting for the job's window (no lag either).
            session.execute(
                insert(CHUNKS),
                [
                    {"job_id": job_id, "seq": 0, "size": 2, "status": "pending",
                     "next_attempt_at": now - 30},
                    {"job_id": job_id, "seq": 1, "size": 1, "status": "pending",
                     "next_attempt_at": now + 3600},
                    {"job_id": job_id, "seq": 2, "size": 1, "status": "pending",
                     "next_attempt_at": 0.0, "published_at": now - 20},
                    {"job_id": job_id, "seq": 3, "size": 1, "status": "pending",
                     "next_attempt_at": 0.0},
                ],
            )  # fmt: skip
        session.execute(insert(SERVICE_BEATS).values(name="sweeper", last_run_at=now - 4))


def test_first_attempts_count_from_their_publication(db: Database) -> None:
    with db.begin() as session:
        now = float(session.execute(db_epoch().select()).scalar_one())
        session.execute(insert(JOBS).values(id="j" * 36, status="running", org_id="o", source="f"))
        session.execute(
            insert(CHUNKS).values(job_id="j" * 36, seq=0, size=1, status="pending",
                                  next_attempt_at=0.0, published_at=now - 12)
        )  # fmt: skip
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))
    got = samples(generate_latest(registry).decode())
    assert 12 <= got["enos_import_oldest_due_chunk_age_seconds"] < 40


def test_collector_reads_jobs_pending_lag_and_sweep(db: Database) -> None:
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(db))
    empty = samples(generate_latest(registry).decode())
    assert empty["enos_import_database_up"] == 1
    assert empty["enos_import_oldest_due_chunk_age_seconds"] == 0
    assert "enos_import_last_sweep_age_seconds" not in empty

    fill(db)
    got = samples(generate_latest(registry).decode())
    assert got["enos_import_jobs{state=running}"] == 2
    assert got["enos_import_jobs{state=completed}"] == 1
    assert got["enos_import_jobs{state=cancelled}"] == 0
    assert got["enos_import_pending_devices"] == 8
    assert 30 <= got["enos_import_oldest_due_chunk_age_seconds"] < 60
    assert 4 <= got["enos_import_last_sweep_age_seconds"] < 30
    assert got["enos_import_last_sweep_timestamp_seconds"] > 1.7e9


def test_database_away_is_a_gauge_not_an_error() -> None:
    away = Database(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/x")
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(away))
    got = samples(generate_latest(registry).decode())
    assert got == {"enos_import_database_up": 0}
    away.dispose()


def test_metrics_serve_answers_over_http(pg_db: Database, tmp_path) -> None:
    fill(pg_db)
    port = free_port()
    env = {**base_env(), "ENOS_IMPORT_DATABASE_URL": pg_db.url, "ENOS_IMPORT_LOG_FORMAT": "json"}
    proc = start(
        "metrics-serve",
        [str(BIN / "enos-import"), "metrics", "serve", "--port", str(port), "--address",
         "127.0.0.1"],
        env, tmp_path,
    )  # fmt: skip
    try:

        def scrape() -> str | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", trust_env=False).text
            except httpx.HTTPError:
                return None

        text = wait_until(scrape, "metrics serve to answer", 30, [proc])
        assert samples(text)["enos_import_jobs{state=running}"] == 2
    finally:
        proc.stop()
