"""Shared fixtures: the simulator in-process and on a real loopback port, and EnOS clients."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

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
def sim_app(sim_store: Store, sim_config: SimConfig):  # type: ignore[no-untyped-def]
    return create_app(sim_store, sim_config, FaultProfile())


@pytest.fixture
def sim_transport(sim_app) -> Iterator[InProcessTransport]:  # type: ignore[no-untyped-def]
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
def sim_server(sim_app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The simulator as a real uvicorn server on a free loopback port; yields its base URL."""
    with serve_in_thread(sim_app) as url:
        yield url
