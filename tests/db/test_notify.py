"""Waiting for a job's end: a NOTIFY wakes the waiter at once on PostgreSQL; elsewhere it
sleeps its timeout."""

from __future__ import annotations

import threading
import time

from worker.db.notify import listening, notify
from worker.db.session import Database

CHANNEL = "enos_import_test_channel"


def test_a_notification_ends_the_wait_at_once(pg_db: Database) -> None:
    def announce() -> None:
        time.sleep(0.2)
        with pg_db.begin() as session:
            notify(session, CHANNEL, "job-1 completed")

    with listening(pg_db.engine, CHANNEL) as listener:
        sender = threading.Thread(target=announce)
        sender.start()
        started = time.monotonic()
        payloads = listener.wait(30.0)
        waited = time.monotonic() - started
        sender.join()
    assert payloads == ["job-1 completed"]
    assert waited < 15.0  # woken by the notification, not by the 30 s timeout
    # The listening connection is not handed back to the pool: sessions still get transactions.
    with pg_db.begin() as session:
        driver = session.connection().connection.driver_connection
        assert driver is not None and driver.autocommit is False


def test_without_notifications_the_wait_is_the_timeout(db: Database) -> None:
    with listening(db.engine, CHANNEL) as listener:
        started = time.monotonic()
        assert listener.wait(0.3) == []
        assert time.monotonic() - started >= 0.25
