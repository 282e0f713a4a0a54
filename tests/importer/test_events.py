"""Completion events: NOTIFY on PostgreSQL, and the outbox published after commit (at least
once: the sweeper publishes what a crash left unpublished). The event consumed by a second
Celery app, from real processes: tests/e2e/test_inbox.py."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import select, update

from tests.importer.support import device, drive, fast_settings, start_job
from worker.context import WorkerContext
from worker.db.models import EVENTS
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.importer import events, jobs
from worker.importer.budget import LocalBudget
from worker.importer.submit import create, job_options
from worker.settings import get_settings

Published = list[tuple[str, str, dict[str, Any]]]


@pytest.fixture
def published(monkeypatch: pytest.MonkeyPatch) -> Iterator[Published]:
    """Events go to a list; ON_FINISH_TASK names a consumer's task."""
    monkeypatch.setenv("ENOS_IMPORT_ON_FINISH_TASK", "consumer.job_done")
    monkeypatch.setenv("ENOS_IMPORT_ON_FINISH_QUEUE", "consumer_events")
    get_settings.cache_clear()
    sent: Published = []
    before = (events._outlet.publish, events._outlet.internal_queue)
    events.set_publisher(lambda task, queue, kwargs: sent.append((task, queue, kwargs)), "q")
    yield sent
    events._outlet.publish, events._outlet.internal_queue = before
    get_settings.cache_clear()


def _new_job(db: Database) -> str:
    job_id = str(uuid.uuid4())
    settings = fast_settings()
    create(db, settings, job_id, "o-demo", "d.csv", job_options(settings, require_secret=False,
                                                               intake="task"))  # fmt: skip
    return job_id


def test_a_finished_job_publishes_its_event_after_commit(
    db: Database, client: EnosClient, published: Published
) -> None:
    ctx = WorkerContext(db, client, fast_settings(), LocalBudget(2), owner="test:1")
    started = start_job(db, ctx.settings, [device("meter-0001"), {"productKey": "pk-meter"}])
    assert drive(ctx, started) == "completed_with_errors"
    assert published == [
        (
            "consumer.job_done",
            "consumer_events",
            {
                "job_id": started.job_id, "status": "completed_with_errors", "org_id": "o-demo",
                "source": "inline", "total": 2, "pending": 0, "invalid": 1, "created": 1,
                "adopted": 0, "conflict": 0, "failed": 0, "review": 0, "cancelled": 0,
            },
        )
    ]  # fmt: skip
    with db.read() as session:
        assert session.execute(select(EVENTS.c.published_at)).scalar_one() is not None


def test_a_rolled_back_end_publishes_nothing(db: Database, published: Published) -> None:
    job_id = _new_job(db)
    with pytest.raises(RuntimeError), db.begin() as session:
        jobs.fail_job(session, job_id, "boom")
        raise RuntimeError("the transaction dies")
    assert published == []
    with db.read() as session:
        assert session.execute(select(EVENTS.c.id)).all() == []


def test_the_sweeper_publishes_events_left_unpublished(db: Database, published: Published) -> None:
    job_id = _new_job(db)
    failing: list[str] = []

    def broker_down(task: str, queue: str, kwargs: dict[str, Any]) -> None:
        failing.append(task)
        raise ConnectionError("broker away")

    events.set_publisher(broker_down, "q")
    with db.begin() as session:
        jobs.fail_job(session, job_id, "no such product")
    assert failing == ["consumer.job_done"]
    events.set_publisher(lambda task, queue, kwargs: published.append((task, queue, kwargs)), "q")
    assert events.publish_pending(db) == 0  # too young: the after-commit publish may be on it
    with db.begin() as session:
        session.execute(update(EVENTS).values(created_at=EVENTS.c.created_at - 60))
    assert events.publish_pending(db) == 1
    assert [(kw["job_id"], kw["status"]) for _, _, kw in published] == [(job_id, "failed")]
    assert events.publish_pending(db) == 0  # marked: not again


def test_listen_sees_the_notify(pg_db: Database, pg_url: str) -> None:
    job_id = _new_job(pg_db)
    dsn = pg_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute("LISTEN enos_import_jobs")
        with pg_db.begin() as session:
            jobs.fail_job(session, job_id, "no such product")
        got = [n.payload for n in listener.notifies(timeout=5, stop_after=1)]
    assert got == [f"{job_id} failed"]
