"""Private services for the fault suite: a Redis and a PostgreSQL of its own on loopback ports,
the simulator, Celery workers and beat, each a real process that can be killed and restarted.

Nothing here touches the shared PostgreSQL and Redis of the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import redis
from sqlalchemy import create_engine, text

BIN = Path(sys.executable).parent
PG_BIN = (
    sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    if Path("/usr/lib/postgresql").exists()
    else Path("/usr/bin")
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except Exception as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{what} not ready after {timeout_s} s ({last})")


class Process:
    """A child process in its own process group, so that it dies whole."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.args = args
        self.env = env
        self.log_path = log
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.args, env=self.env, cwd=self.cwd, stdout=log, stderr=log,
            start_new_session=True,
        )  # fmt: skip
        log.close()

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.popen is None or self.popen.poll() is not None:
            self.kill()
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        self.kill()

    def children(self) -> list[int]:
        """Direct children (Celery's prefork pool processes)."""
        try:
            text_ = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text_.split()]

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class PrivateRedis:
    """A Redis of the suite's own, with AOF (as deployed): a restart keeps the queues."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = Process(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.dir),
             "--maxmemory-policy", "noeviction"],
            dict(os.environ), root / "redis.log", root,
        )  # fmt: skip

    def start(self) -> None:
        self.process.start()
        wait_until(self.ping, 20, "private redis")

    def ping(self) -> bool:
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()

    def restart(self) -> None:
        self.process.stop(grace_s=10)
        self.start()

    def flushall(self) -> None:
        client = redis.Redis.from_url(self.url, socket_timeout=5)
        try:
            client.flushall()
        finally:
            client.close()

    def stop(self) -> None:
        self.process.kill()


class PrivatePostgres:
    """A PostgreSQL cluster of the suite's own (initdb/pg_ctl, run as the postgres user)."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.dir = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.log = root / "postgres.log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/enos_import"
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str) -> None:
        command = list(args)
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        if not self.dir.exists():
            for path in (self.dir, self.socket_dir):
                path.mkdir(parents=True)
            self.log.touch()
            if self._as_postgres:
                shutil.chown(self.dir.parent, "postgres")
                for path in (self.dir, self.socket_dir, self.log):
                    shutil.chown(path, "postgres", "postgres")
            self._run(str(PG_BIN / "initdb"), "-D", str(self.dir), "-U", "postgres",
                      "--auth", "trust", "-E", "UTF8", "--no-sync")  # fmt: skip
        self._pg_ctl("start")
        admin = create_engine(
            f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres",
            isolation_level="AUTOCOMMIT",
        )
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = 'enos_import'")
            ).first()
            if exists is None:
                conn.execute(text("CREATE DATABASE enos_import"))
        admin.dispose()

    def _pg_ctl(self, action: str, mode: str = "fast") -> None:
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(str(PG_BIN / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log),
                  "-o", options, "-m", mode, "-w", "-t", "60", action)  # fmt: skip

    def restart(self) -> None:
        self._pg_ctl("restart", mode="fast")

    def terminate_backends(self) -> int:
        engine = create_engine(self.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = 'enos_import' AND pid <> pg_backend_pid()"
                )
            ).scalar_one()
        engine.dispose()
        return int(killed)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError, subprocess.TimeoutExpired):
            self._pg_ctl("stop", mode="immediate")


class Simulator:
    def __init__(
        self, root: Path, faults: str, auth: str = "strict", product_cap: int = 10_000_000
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = root / "simulator.db"
        self.process = Process(
            [str(BIN / "enos-import"), "simulator", "--port", str(self.port), "--seed-demo",
             "--state", str(self.state), "--auth", auth, "--faults", faults,
             "--product-cap", str(product_cap), "--ou-cap", "100000000",
             "--private-key-out", str(root / "demo-key.pem")],
            dict(os.environ), root / "simulator.log", root,
        )  # fmt: skip

    def start(self) -> None:
        self.process.start()
        wait_until(lambda: httpx.get(f"{self.url}/__sim/stats", timeout=2).status_code == 200,
                   30, "simulator")  # fmt: skip

    def set_faults(self, profile: dict[str, float]) -> None:
        httpx.post(f"{self.url}/__sim/faults", json=profile, timeout=10).raise_for_status()

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/__sim/stats", timeout=30).json())

    def devices(self) -> list[dict[str, object]]:
        import orjson

        response = httpx.get(f"{self.url}/__sim/devices", timeout=120)
        return [orjson.loads(line) for line in response.content.splitlines() if line]

    def stop(self) -> None:
        self.process.stop()
