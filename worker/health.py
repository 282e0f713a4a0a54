"""``enos-import health``: is the service able to import right now?

Each check answers for one dependency, in the order an operator would look: the database (and
its schema at the migrations' head), the broker, a worker that answers and consumes our queue,
a sweeper that ran lately, and, when asked, a token from EnOS. Every check is bounded in time,
so that the command can be a Kubernetes probe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text

from worker.db.migrate import alembic_config
from worker.db.session import Database, database_url
from worker.importer.sweeper import seconds_since_beat
from worker.settings import Settings

# A sweep is overdue after this many intervals: one late beat is not an outage.
SWEEP_INTERVALS = 3
TIMEOUT_S = 3.0


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float = 0.0


@dataclass
class Report:
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(check) for check in self.checks]}


class Unhealthy(Exception):
    """A check failed; the message says what an operator should look at."""


def _timed(name: str, probe: Callable[[], str]) -> Check:
    started = time.monotonic()
    try:
        detail, ok = probe(), True
    except Unhealthy as exc:
        detail, ok = str(exc), False
    except Exception as exc:  # a dependency's own error, shown by its class and message
        detail, ok = f"{type(exc).__name__}: {_first_line(exc)}", False
    return Check(name, ok, detail, round(time.monotonic() - started, 3))


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [""])[0][:300]


def check_database(db: Database) -> str:
    heads = set(ScriptDirectory.from_config(alembic_config(db.url)).get_heads())
    with db.read() as session:
        session.execute(text("SELECT 1"))
        current = set(MigrationContext.configure(session.connection()).get_current_heads())
    if current != heads:
        raise Unhealthy(
            f"schema at {sorted(current) or 'no revision'}, head is {sorted(heads)}: "
            "run `enos-import db upgrade`"
        )
    return f"reachable, schema at head {', '.join(sorted(heads))}"


def check_sweep(db: Database, settings: Settings) -> str:
    with db.read() as session:
        age = seconds_since_beat(session)
    limit = SWEEP_INTERVALS * settings.sweep_interval_s
    if age is None:
        raise Unhealthy("no sweep ever ran: is exactly one `celery beat` running?")
    if age > limit:
        raise Unhealthy(f"last sweep {age:.0f} s ago (more than {limit:g} s): is beat running?")
    return f"last sweep {age:.1f} s ago"


def check_broker(app: Any) -> str:
    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1, interval_start=0, timeout=TIMEOUT_S)
    return "reachable"


def check_workers(app: Any, queue: str) -> str:
    """At least one worker answers, and it consumes ``queue``."""
    answers = app.control.inspect(timeout=TIMEOUT_S).active_queues() or {}
    if not answers:
        raise Unhealthy("no worker answered a ping")
    consuming = sorted(
        name for name, queues in answers.items() if any(q.get("name") == queue for q in queues)
    )
    if not consuming:
        raise Unhealthy(f"{len(answers)} worker(s) answered, none consumes the queue {queue}")
    return f"{len(consuming)} worker(s) consume {queue}: {', '.join(consuming)}"


def check_enos(settings: Settings) -> str:
    from worker.runtime import make_client

    with make_client(settings) as client:
        client.check_token()
    return f"a token was issued by {settings.api_url}"


def run_checks(settings: Settings, enos: bool = False) -> Report:
    from worker.celery_app import QUEUE, create_celery

    db = Database(
        database_url(settings.database_url), connect_args=_connect_timeout(settings.database_url)
    )
    app = create_celery(settings)
    try:
        checks = [
            _timed("database", lambda: check_database(db)),
            _timed("broker", lambda: check_broker(app)),
            _timed("worker", lambda: check_workers(app, QUEUE)),
            _timed("sweep", lambda: check_sweep(db, settings)),
        ]
        if enos:
            checks.append(_timed("enos", lambda: check_enos(settings)))
    finally:
        db.dispose()
        app.close()
    return Report(checks)


def _connect_timeout(url: str) -> dict[str, Any]:
    # An unreachable PostgreSQL must fail the probe within its own timeout, not the kernel's.
    return {"connect_timeout": int(TIMEOUT_S)} if url.startswith("postgresql") else {}
