"""The Celery application: ``celery -A worker.celery_app worker`` and ``… beat``.

Celery with Redis delivers at least once, with known holes; the database is the source of
truth and a message only says "look at chunk 42". The settings below make deliveries late and
repeated rather than lost, and the claim, the fencing token and the sweeper make repeats
harmless. References are to Celery's issue tracker; ``docs/reliability.md`` has the full matrix.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.schedules import crontab
from celery.signals import setup_logging, worker_init
from kombu.entity import Exchange, Queue
from sqlalchemy.exc import InterfaceError, OperationalError

from worker.host import tune_collector
from worker.logs import configure as configure_logging
from worker.logs import get_logger
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
        # Time limits: a task stuck on hostile input or a hung call must end. A chunk's lease
        # is renewed right before its call, so a chunk may take its look-ups, its wait for a
        # call slot and then one call: three leases at most (and never past half the way to
        # a broker redelivery), with its hard limit before that redelivery. An
        # intake or a scan reads a whole file: TASK_TIME_LIMIT_S; a stopped intake is started
        # again by the sweeper, a bounded number of times.
        task_annotations=_time_limits(settings),
        # A child whose memory grew past this (fragmentation, a large input) is replaced after
        # its task, so that one process cannot starve the machine (KiB).
        worker_max_memory_per_child=settings.worker_max_memory_mb * 1024,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        beat_schedule=_beat_schedule(settings),
        # Crontab schedules (the inbox scan) are read in this time zone.
        timezone=settings.inbox_timezone,
    )


def _beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    schedule: dict[str, dict[str, Any]] = {
        "enos_import.sweep": {
            "task": "enos_import.sweep",
            "schedule": settings.sweep_interval_s,
            "options": {"expires": settings.sweep_interval_s * 3},
        },
    }
    if settings.inbox_dir is not None:
        when: Any = settings.inbox_scan_interval_s or crontab(*settings.inbox_schedule.split())
        schedule["enos_import.scan_inbox"] = {"task": "enos_import.scan_inbox", "schedule": when}
    return schedule


def _time_limits(settings: Settings) -> dict[str, dict[str, float]]:
    visibility = settings.visibility_timeout_s
    chunk_soft = min(3 * settings.lease_s, settings.lease_s + (visibility - settings.lease_s) / 2)
    chunk_hard = chunk_soft + (visibility - chunk_soft) / 2
    long_task = {
        "soft_time_limit": settings.task_time_limit_s,
        "time_limit": settings.task_time_limit_s + 60,
    }
    return {
        "enos_import.send_chunk": {"soft_time_limit": chunk_soft, "time_limit": chunk_hard},
        "enos_import.submit": long_task,
        "enos_import.scan_inbox": long_task,
        "enos_import.ingest_inbox_file": long_task,
        "enos_import.inbox_job_done": long_task,
        # The sweeper runs every few seconds; one that hangs must not hold a child forever.
        "enos_import.sweep": {"soft_time_limit": 300.0, "time_limit": 360.0},
    }


def create_celery(settings: Settings | None = None) -> Celery:
    app = Celery("enos_import", include=["worker.tasks", "worker.inbox.tasks"])
    configure(app, settings or get_settings())
    return app


app = create_celery()

# A database that is away (restart, dropped connection) makes a task try again soon; anything
# else is a bug that the sweeper's retry schedule and the chunk's attempt cap contain.
DB_DOWN = (OperationalError, InterfaceError)


def task(name: str, **options: Any) -> Any:
    """The project's task decorator: a contract name, and a retry (with backoff) only when
    the database is away; ``options`` add to or override these."""
    defaults: dict[str, Any] = {
        "autoretry_for": DB_DOWN,
        "retry_backoff": True,
        "retry_backoff_max": 30,
        "max_retries": 20,
    }
    return app.task(name=name, **{**defaults, **options})


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


@worker_init.connect
def _collector(**_: Any) -> None:
    from worker.runtime import prepare

    # In the parent, before the pool forks: the children start their first task warm. Best
    # effort: what fails here (a database URL of an unknown kind) fails each task as before,
    # with the task's own error.
    try:
        prepare(get_settings())
    except Exception as exc:
        # The type only: a message about the database URL could quote its password.
        get_logger(__name__).warning("worker.prepare_failed", error=type(exc).__name__)
    tune_collector()  # last: what prepare made is frozen with the rest
