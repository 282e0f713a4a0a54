"""What /proc says about the processes measured: process trees, their CPU time and peak RSS."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.throughput.config import (
    CLOCK_TICKS,
    BenchError,
)


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()  # fields[0] is field 3 (state)


def ppids() -> dict[int, int]:
    out: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                out[int(entry)] = int(fields[1])
    return out


def tree(root: int, parents: dict[int, int] | None = None) -> list[int]:
    """``root`` and every live descendant (``parents``: a reading of ``ppids()`` to reuse)."""
    parents = ppids() if parents is None else parents
    found = [root] if root in parents else []
    frontier = list(found)
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of a process tree, its reaped children included: a child that
    exits between two readings moves into its parent's cutime/cstime, so deltas stay right."""
    total = 0
    for pid in tree(root):
        fields = _stat_fields(pid)
        if fields is not None:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / CLOCK_TICKS


def postmaster_pid(admin_url: str) -> int:
    """The postmaster of the server at ``admin_url`` (the parent of our own backend); other
    PostgreSQL servers on the machine (a test suite's private ones) are not ours to count."""
    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            backend = int(conn.execute(text("SELECT pg_backend_pid()")).scalar_one())
            fields = _stat_fields(backend)  # while the backend lives
    finally:
        engine.dispose()
    if fields is None:
        raise BenchError("cannot read the PostgreSQL backend's /proc entry")
    return int(fields[1])


def redis_pid(url: str) -> int:
    """The Redis server at ``url`` (its own word: INFO's process_id)."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        return int(client.info("server")["process_id"])
    finally:
        client.close()


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None
