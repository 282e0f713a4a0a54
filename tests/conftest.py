"""Shared fixtures: the simulator in-process and on a real loopback port, and EnOS clients."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import settings

from tests.harness.services import postgres_admin_url, redis_server_url
from worker.enos.client import EnosClient
from worker.simulator.api import SimConfig
from worker.simulator.app import create_app
from worker.simulator.faults import FaultProfile
from worker.simulator.inprocess import InProcessTransport
from worker.simulator.server import serve_in_thread
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, Store

# Tests read their configuration from their own fixtures, never from a developer's environment.
for _name in [n for n in os.environ if n.startswith("ENOS_IMPORT_")]:
    del os.environ[_name]

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Property tests: a developer's run draws fresh examples and replays the failures it kept; CI
# draws the same examples every time (a submission fails for what it changed, not for a new
# draw), and keeps no database; `make test-fuzz` draws fresh and many more.
settings.register_profile("dev", max_examples=60)
settings.register_profile("ci", max_examples=60, derandomize=True, database=None, print_blob=True)
settings.register_profile("fuzz", max_examples=2_000)
settings.load_profile("ci" if CI else "dev")


@pytest.fixture(scope="session")
def demo_store_session() -> Store:
    """One seeded store per session: generating the demo RSA key takes a moment."""
    store = Store()
    store.seed_demo()
    return store


@pytest.fixture
def sim_store(demo_store_session: Store) -> Iterator[Store]:
    """The seeded simulator state, emptied of devices and limits reset around each test."""
    store = demo_store_session
    store.clear_devices()
    store.created_total = 0
    store.limits.batch_max, store.limits.product_cap, store.limits.ou_cap = 1000, 10_000, 100_000
    yield store
    store.clear_devices()


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig()


@pytest.fixture
def sim_app(sim_store: Store, sim_config: SimConfig):
    return create_app(sim_store, sim_config, FaultProfile())


@pytest.fixture
def sim_transport(sim_app) -> Iterator[InProcessTransport]:
    transport = InProcessTransport(sim_app)
    yield transport
    transport.close()


@pytest.fixture
def sim_http(sim_transport: InProcessTransport) -> Iterator[httpx.Client]:
    """A raw HTTP client to the in-process simulator (for wire-level tests)."""
    with httpx.Client(base_url="http://enos.test", transport=sim_transport) as client:
        yield client


@pytest.fixture
def client(sim_transport: InProcessTransport) -> Iterator[EnosClient]:
    """The EnOS client, with the demo account, against the in-process simulator."""
    with EnosClient(
        "http://enos.test", DEMO_APP_KEY, DEMO_APP_SECRET, transport=sim_transport
    ) as enos:
        yield enos


@pytest.fixture
def sim_server(sim_app) -> Iterator[str]:
    """The simulator as a real uvicorn server on a free loopback port; yields its base URL."""
    with serve_in_thread(sim_app) as url:
        yield url


# ----------------------------------------------------------------------------------- databases
TABLES = (
    "import_job_events, import_inbox_files, import_inbox_sightings, import_items, import_chunks, "
    "import_full_products, import_jobs, import_org_batch_limits, import_service_beats"
)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The PostgreSQL server of this session: the machine's on 127.0.0.1:5432, or else a
    private one (see tests/harness/services.py). Every PostgreSQL URL of the tests starts here."""
    with postgres_admin_url() as url:
        yield url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """The Redis server of this session (``redis://host:port``): the machine's on
    127.0.0.1:6379, or else a private one. Every Redis URL of the tests starts here."""
    with redis_server_url() as url:
        yield url


@pytest.fixture(scope="session")
def pg_url(pg_admin_url: str, worker_tag: str) -> Iterator[str]:
    """A PostgreSQL database of this test session, migrated once."""
    from tests.harness.services import empty_database
    from worker.db.migrate import upgrade

    with empty_database(pg_admin_url, f"enos_import_test_{worker_tag}") as url:
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def worker_tag() -> str:
    return str(os.getpid())


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    from worker.db.migrate import upgrade

    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'enos-import.db'}"
    upgrade(url)
    return url


@pytest.fixture(params=["postgresql", "sqlite"])
def db(request: pytest.FixtureRequest):
    """The import database, on PostgreSQL and on SQLite, emptied before each test."""
    from sqlalchemy import text

    from worker.db.session import Database

    url = request.getfixturevalue("pg_url" if request.param == "postgresql" else "sqlite_url")
    database = Database(url)
    with database.begin() as session:
        if request.param == "postgresql":
            session.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY"))
        else:
            for table in TABLES.split(", "):
                session.execute(text(f"DELETE FROM {table}"))
    yield database
    database.dispose()


@pytest.fixture
def pg_db(pg_url: str):
    """The PostgreSQL import database alone, emptied before the test."""
    from sqlalchemy import text

    from worker.db.session import Database

    database = Database(pg_url)
    with database.begin() as session:
        session.execute(text(f"TRUNCATE {TABLES} RESTART IDENTITY"))
    yield database
    database.dispose()


@pytest.fixture
def redis_url(redis_server: str) -> str:
    """A Redis database number of the tests' own, flushed first."""
    import redis

    # TEST_REDIS_DB lets several checkouts run their suites side by side on one server.
    url = f"{redis_server}/{os.environ.get('TEST_REDIS_DB', '11')}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url
