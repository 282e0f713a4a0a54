"""The embedded runner behind ``enos-import run``: the whole import in one process.

A real Celery worker (threads pool) consumes an in-process ``memory://`` broker and runs the same
tasks, claims and chunk code as a deployment; the process's own loop plays Celery beat (the
sweeper). The database is ``ENOS_IMPORT_DATABASE_URL``, or else a local SQLite file. Killed and
run again on the same file, it finds its job by the file's content hash and resumes it; chunks
held by the dead process are taken over at once, after reconciling by deviceKey.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery.worker import WorkController
from sqlalchemy import select, update

from worker.celery_app import QUEUE, app
from worker.context import WorkerContext
from worker.db.migrate import upgrade
from worker.db.models import CHUNKS, JOBS, ChunkStatus, JobStatus
from worker.db.session import Database, database_url
from worker.host import pid_alive
from worker.importer.budget import LocalBudget
from worker.importer.submit import IntakeResult, create, job_options, run_intake
from worker.importer.sweeper import sweep
from worker.logs import get_logger
from worker.readers.sources import Source
from worker.runtime import install_context, lease_owner, make_client
from worker.settings import Settings

log = get_logger(__name__)

POLL_S = 0.01


class _Worker(WorkController):  # type: ignore[misc]
    """A WorkController that says when its consumer is ready."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = threading.Event()
        super().__init__(*args, **kwargs)

    def on_consumer_ready(self, consumer: Any) -> None:
        self.ready.set()


@dataclass
class Embedded:
    settings: Settings
    db: Database
    worker: _Worker | None = None
    thread: threading.Thread | None = None
    next_sweep: float = 0.0

    def start(self) -> None:
        # The in-memory broker is polled: every 10 ms, not kombu's default of once a second,
        # or each chunk's follow-up would wait up to a second before a thread takes it.
        app.conf.update(
            broker_url="memory://localhost/",
            broker_transport_options={"polling_interval": POLL_S},
        )
        install_context(
            WorkerContext(
                db=self.db,
                client=make_client(self.settings),
                settings=self.settings,
                budget=LocalBudget(self.settings.max_concurrency, self.settings.lease_s / 4),
                owner=lease_owner(),
            )
        )
        import worker.tasks  # noqa: F401 - registers the tasks on the app

        self.worker = _Worker(
            app=app,
            hostname=f"embedded@{socket.gethostname()}",
            pool="threads",
            # Two threads more than calls in flight (as deploy/ runs ten processes for eight):
            # a chunk is claimed and read while others write their outcomes.
            concurrency=self.settings.max_concurrency + 2,
            loglevel="WARNING",
            queues=[QUEUE],
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            ready_callback=None,
        )
        self.thread = threading.Thread(target=self.worker.start, name="celery", daemon=True)
        self.thread.start()
        if not self.worker.ready.wait(30):
            raise RuntimeError("the embedded Celery worker did not start")

    def stop(self) -> None:
        if self.thread is None:
            return
        assert self.worker is not None
        self.worker.stop(in_sighandler=False)
        self.thread.join(30)

    def tick(self) -> None:
        """A sweep, at most every ``SWEEP_INTERVAL_S``: what Celery beat does in a deployment.
        Called on every poll of the job's state, which is more often."""
        from worker.publish import publish_chunks
        from worker.tasks import restart_intake

        now = time.monotonic()
        if now < self.next_sweep:
            return
        self.next_sweep = now + self.settings.sweep_interval_s
        sweep(self.db, self.settings, publish_chunks, restart_intake)


def embedded_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={"broker_url": "memory://localhost/", "sweep_interval_s": 1.0}
    )


def open_embedded_database(settings: Settings) -> Database:
    url = database_url(settings.database_url)
    upgrade(url)
    return Database(url)


def find_resumable(db: Database, org_id: str, content_sha256: str) -> tuple[str, bool] | None:
    """An unfinished embedded job of the same org and file content, made ready to resume, and
    whether its intake stopped before the end of the file (it then reads on from there)."""
    with db.begin() as session:
        row = session.execute(
            select(JOBS.c.id, JOBS.c.options, JOBS.c.status, JOBS.c.intake_lease_until)
            .where(
                JOBS.c.org_id == org_id,
                JOBS.c.source_sha256 == content_sha256,
                JOBS.c.status.in_((JobStatus.RUNNING, JobStatus.CANCELLING)),
            )
            .order_by(JOBS.c.created_at.desc())
        ).first()
        if row is None or (row.options or {}).get("intake") != "embedded":
            return None
        release_dead_leases(session, row.id)
        # The messages of an embedded job lived in its runner's memory: publish afresh.
        session.execute(
            update(CHUNKS)
            .where(CHUNKS.c.job_id == row.id, CHUNKS.c.status == ChunkStatus.PENDING)
            .values(published_at=None)
        )
        reading = row.status == JobStatus.RUNNING and row.intake_lease_until is not None
        if reading:
            # Its intake died with the runner that held it: take it over at once.
            session.execute(update(JOBS).where(JOBS.c.id == row.id).values(intake_lease_until=0.0))
        return str(row.id), reading


def release_dead_leases(session: Any, job_id: str) -> int:
    """Chunks held by processes of this host that no longer exist are due at once; their next
    attempt reconciles by deviceKey, since the dead process may have reached EnOS."""
    host = socket.gethostname()
    released = 0
    for chunk_id, holder in session.execute(
        select(CHUNKS.c.id, CHUNKS.c.lease_owner).where(
            CHUNKS.c.job_id == job_id, CHUNKS.c.status == ChunkStatus.IN_FLIGHT
        )
    ):
        name, _, pid = str(holder or "").partition(":")
        if name == host and pid.isdigit() and not pid_alive(int(pid)):
            session.execute(
                update(CHUNKS)
                .where(CHUNKS.c.id == chunk_id)
                .values(lease_expires_at=0.0, published_at=None)
            )
            released += 1
    return released


def start_or_resume(
    db: Database,
    settings: Settings,
    org_id: str,
    source: Source,
    require_secret: bool,
    key_mode: str | None,
    announce: Any,
    publish: Callable[[list[int]], None],
) -> tuple[str, IntakeResult | None]:
    """The job id (announced as soon as it exists) and the intake's result (None: resumed with
    its file already read). Chunks are handed to ``publish`` as the intake commits them."""
    content_sha256 = source.sha256()
    resumed = find_resumable(db, org_id, content_sha256)
    if resumed is not None:
        job_id, reading = resumed
        announce(job_id)
        log.info("job.resumed", job_id=job_id, reading=reading)
        if not reading:
            source.close()
            return job_id, None
        with db.read() as session:
            options = session.execute(select(JOBS.c.options).where(JOBS.c.id == job_id)).scalar()
        return job_id, run_intake(
            db, settings, job_id, org_id, source, dict(options or {}), publish=publish
        )

    job_id = str(uuid.uuid4())
    options = job_options(
        settings, require_secret=require_secret, intake="embedded", key_mode=key_mode
    )
    create(db, settings, job_id, org_id, source.name, options)
    announce(job_id)
    return job_id, run_intake(db, settings, job_id, org_id, source, options, publish=publish)
