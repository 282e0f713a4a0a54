"""Gauges read from the database on every scrape, served by ``enos-import metrics serve``.

They describe the whole service, not one worker: run exactly one such process (beside beat).
The workers' own counters are in :mod:`worker.metrics`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from worker.db.clock import db_epoch
from worker.db.models import (
    CHUNKS,
    ITEMS,
    JOBS,
    SERVICE_BEATS,
    ChunkStatus,
    ItemStatus,
    JobStatus,
)
from worker.db.session import Database, Session
from worker.importer.sweeper import BEAT
from worker.logs import get_logger

log = get_logger(__name__)
PREFIX = "enos_import"


def jobs_by_state(session: Session) -> dict[str, int]:
    counts = {state.value: 0 for state in JobStatus}
    rows = session.execute(select(JOBS.c.status, func.count()).group_by(JOBS.c.status))
    counts.update({str(state): int(count) for state, count in rows})
    return counts


def pending_devices(session: Session) -> int:
    query = select(func.count()).select_from(ITEMS).where(ITEMS.c.status == ItemStatus.PENDING)
    return int(session.execute(query).scalar_one())


def oldest_due_age_s(session: Session) -> float:
    """How long the longest-waiting due chunk has waited (0: none): since its retry time, or,
    for a first attempt, since it was published. A first attempt not yet published waits for
    the job's window by design, which is no lag."""
    since = func.coalesce(func.nullif(CHUNKS.c.next_attempt_at, 0.0), CHUNKS.c.published_at)
    due = select(func.min(since)).where(
        CHUNKS.c.status == ChunkStatus.PENDING, CHUNKS.c.next_attempt_at <= db_epoch()
    )
    oldest = session.execute(due).scalar()
    if oldest is None:
        return 0.0
    now = session.execute(select(db_epoch())).scalar_one()
    return max(0.0, float(now) - float(oldest))


def last_sweep(session: Session) -> tuple[float, float] | None:
    """The last sweep as (epoch seconds, seconds ago), by the database's clock."""
    beats = SERVICE_BEATS.c
    row = session.execute(
        select(beats.last_run_at, db_epoch() - beats.last_run_at).where(beats.name == BEAT)
    ).first()
    return None if row is None else (float(row[0]), float(row[1]))


class DatabaseCollector(Collector):
    """Reads the gauges at each scrape; a database that is away gives ``…_database_up 0``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(f"{PREFIX}_database_up", "1 when the database answered.")
        try:
            with self._db.read() as session:
                families = list(self._read(session))
        except Exception as exc:
            log.warning("metrics.database_unreachable", error=type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _read(self, session: Session) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily(f"{PREFIX}_jobs", "Import jobs by state.", labels=["state"])
        for state, count in jobs_by_state(session).items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily(
            f"{PREFIX}_pending_devices",
            "Rows not yet final, over every job.",
            value=pending_devices(session),
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_due_chunk_age_seconds",
            "How long the longest-waiting due chunk has waited past its time (the lag).",
            value=oldest_due_age_s(session),
        )
        sweep = last_sweep(session)
        if sweep is not None:
            yield GaugeMetricFamily(
                f"{PREFIX}_last_sweep_timestamp_seconds",
                "When the sweeper last ran (epoch seconds, database clock).",
                value=sweep[0],
            )
            yield GaugeMetricFamily(
                f"{PREFIX}_last_sweep_age_seconds",
                "How long ago the sweeper last ran.",
                value=sweep[1],
            )
