"""CPU of one database's backends on a shared PostgreSQL server.

bench.import_throughput counts the whole server's process tree, which on a shared machine also
holds every other database's work (other checkouts' test suites). This sampler adds a second,
narrower figure: the CPU of the backends connected to the bench's own database, read from
``/proc/<pid>/stat`` every 0.2 s. A backend that ends between two readings loses at most its
last 0.2 s; the server's shared processes (WAL writer, checkpointer, autovacuum) are not in it.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from sqlalchemy import create_engine, text

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
INTERVAL_S = 0.2


def cpu_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])  # utime stime


class BackendCpu:
    """``with BackendCpu(admin_url, database) as cpu: ...`` then ``cpu.seconds``."""

    def __init__(self, admin_url: str, database: str) -> None:
        self._engine = create_engine(admin_url)
        self._database = database
        self._first: dict[int, int] = {}
        self._last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-backends", daemon=True)

    def __enter__(self) -> BackendCpu:
        self._sample(existing=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sample(existing=False)
        self._engine.dispose()

    @property
    def seconds(self) -> float:
        ticks = sum(last - self._first.get(pid, 0) for pid, last in self._last.items())
        return ticks / CLOCK_TICKS

    def _sample(self, existing: bool) -> None:
        """Backends seen at the start count from their reading then; later ones from zero."""
        with self._engine.connect() as conn:
            pids = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = :db"),
                {"db": self._database},
            ).scalars()
            for pid in pids:
                ticks = cpu_ticks(int(pid))
                if ticks is None:
                    continue
                if existing:
                    self._first[int(pid)] = ticks
                self._last[int(pid)] = ticks

    def _run(self) -> None:
        while not self._stop.wait(INTERVAL_S):
            self._sample(existing=False)
