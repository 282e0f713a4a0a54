"""The Celery application: ``celery -A worker.celery_app worker`` and ``… beat``.

Celery with Redis delivers at least once, with known holes; the database is the source of
truth and a message only says "look at chunk 42". The settings below make deliveries late and
repeated rather than lost, and the claim, the fencing token and the sweeper make repeats
harmless. References are to Celery's issue tracker; ``docs/reliability.md`` has the full matrix.
"""

from __future__ import annotations

import gc
from typing import Any

from celery import Celery
from celery.signals import setup_logging, worker_init
from kombu.entity import Exchange, Queue

from worker.logs import configure as configure_logging
from worker.settings import Settings, get_settings

QUEUE = "enos_import"


def configure(app: Celery, settings: Settings) -> None:
    visibility = {"visibility_timeout": settings.visibility_timeout_s}
    app.conf.update(
        broker_url=settings.broker_url,
        # Ack after the task ran, so that a worker killed mid-chunk leaves the message to be
        # delivered again; tasks are idempotent (claim + fencing token).
        task_acks_late=True,
        # Even with late acks, a prefork child killed by SIGKILL or the OOM killer would be
        # acked by its parent (celery #3053); requeue instead. The DB attempt cap stops loops.
        task_reject_on_worker_lost=True,
        # One message per process at a time: a reserved message is one a crash would delay.
        worker_prefetch_multiplier=1,
        # One visibility timeout everywhere (broker, results, app), longer than the chunk
        # lease, so that the DB lease, not a racing redelivery, recovers a chunk (#7651).
        broker_transport_options=visibility,
        result_backend_transport_options=visibility,
        visibility_timeout=settings.visibility_timeout_s,
        # A worker that loses Redis cannot ack its running tasks; they will be delivered again,
        # so stop them instead of letting them finish twice (#6654); fencing covers the rest.
        worker_cancel_long_running_tasks_on_connection_loss=True,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # Status lives in the database; a result backend would only add failure modes.
        task_ignore_result=True,
        result_backend=None,
        task_serializer="json",
        accept_content=["json"],
        # Messages go through the default (nameless) exchange straight to the queue's list:
        # a Redis restart or FLUSHALL that loses kombu's binding keys cannot make publishing
        # silently drop messages.
        task_queues=[Queue(QUEUE, Exchange(""), routing_key=QUEUE)],
        task_default_queue=QUEUE,
        task_default_exchange="",
        task_default_routing_key=QUEUE,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule={
            "enos_import.sweep": {
                "task": "enos_import.sweep",
                "schedule": settings.sweep_interval_s,
                "options": {"expires": settings.sweep_interval_s * 3},
            },
        },
    )


def create_celery(settings: Settings | None = None) -> Celery:
    app = Celery("enos_import", include=["worker.tasks"])
    configure(app, settings or get_settings())
    return app


app = create_celery()


@setup_logging.connect
def _logging(**_: Any) -> None:
    """Workers and beat log like every other entry point: structured, ENOS_IMPORT_LOG_*."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    from worker.preflight import placeholder_problems
    from worker.runtime import transport_warnings

    if problems := placeholder_problems(settings):
        # Celery logs and swallows a signal handler's exception: only SystemExit stops it.
        raise SystemExit(f"enos-import: {'; '.join(problems)}")
    transport_warnings(settings)


# The collector's first generation holds this many new objects before it runs (default 700).
GC_THRESHOLDS = (10_000, 50, 100)


@worker_init.connect
def _collector(**_: Any) -> None:
    """A worker makes about ten container objects per device (answers, outcomes, rows) and keeps
    none of them, next to a few hundred thousand long-lived objects from start-up. Those are
    frozen (the collector never walks them again; prefork children inherit that), and a larger
    first generation lets a chunk's objects die young instead of being promoted and walked by
    full collections: about 15% less CPU per chunk (measured sending chunks in one process)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
