"""Lost answers over real sockets: the simulator on loopback drops or holds its answers.

A lost answer after the request left is ambiguous (EnOS may have created the devices, and here
it did or did not, and the test looks); a connection that never opened is transient and unsent.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette

from tests.enos.support import option
from tests.harness.processes import free_port
from worker.enos import errors
from worker.enos.client import EnosClient
from worker.simulator.api import SimConfig
from worker.simulator.faults import FaultProfile
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG, Store

KEYS = ["lost-0001", "lost-0002", "lost-0003"]


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(auth="strict")


@pytest.fixture
def enos(sim_server: str) -> Iterator[EnosClient]:
    with EnosClient(sim_server, DEMO_APP_KEY, DEMO_APP_SECRET, read_timeout=1.0) as client:
        yield client


def inject(app: Starlette, spec: str) -> None:
    app.state.api.faults = FaultProfile.parse(spec)


@pytest.mark.parametrize(
    ("spec", "committed"),
    [
        ("timeout_after_commit=1", True),
        ("reset_after_commit=1", True),
        ("reset_before_commit=1", False),
    ],
)
def test_lost_answer_is_ambiguous(
    enos: EnosClient, sim_app: Starlette, sim_store: Store, spec: str, committed: bool
) -> None:
    enos.count_devices(DEMO_ORG, "pk-meter")  # a token and a kept-alive connection first
    inject(sim_app, spec)
    started = time.monotonic()
    with pytest.raises(errors.AmbiguousError):
        enos.batch_create(DEMO_ORG, [option(key) for key in KEYS])
    assert time.monotonic() - started < 5  # the read timeout (1 s) bounds the wait
    inject(sim_app, "")
    found = enos.find_devices(DEMO_ORG, KEYS)
    assert sorted(found) == (KEYS if committed else [])
    assert sim_store.device_count() == len(found)


@pytest.mark.parametrize(
    ("spec", "committed"), [("timeout_after_commit=1", True), ("reset_before_commit=1", False)]
)
def test_lost_answer_in_process_is_ambiguous(
    client: EnosClient, sim_app: Starlette, sim_store: Store, spec: str, committed: bool
) -> None:
    inject(sim_app, spec)
    with pytest.raises(errors.AmbiguousError):
        client.batch_create(DEMO_ORG, [option(key) for key in KEYS])
    inject(sim_app, "")
    assert sorted(client.find_devices(DEMO_ORG, KEYS)) == (KEYS if committed else [])


@pytest.mark.parametrize(
    ("spec", "error", "retry_after"),
    [
        ("http500=1", errors.TransientError, None),
        ("http503=1", errors.TransientError, None),
        ("http429=1,retry_after_s=2", errors.RateLimitedError, 2.0),
    ],
)
def test_gateway_faults_are_transient(
    enos: EnosClient,
    sim_app: Starlette,
    sim_store: Store,
    spec: str,
    error: type[errors.TransientError],
    retry_after: float | None,
) -> None:
    inject(sim_app, spec)
    with pytest.raises(error) as caught:
        enos.batch_create(DEMO_ORG, [option(key) for key in KEYS])
    assert type(caught.value) is error
    assert caught.value.sent is True
    assert caught.value.retry_after == retry_after
    assert sim_store.device_count() == 0


def test_closed_port_is_transient_and_never_sent() -> None:
    port = free_port()
    # Nothing listens on the port any more: the connection is refused.
    with (
        EnosClient(f"http://127.0.0.1:{port}", DEMO_APP_KEY, DEMO_APP_SECRET) as enos,
        pytest.raises(errors.TransientError) as caught,
    ):
        enos.batch_create(DEMO_ORG, [option(key) for key in KEYS])
    assert type(caught.value) is errors.TransientError
    assert caught.value.sent is False
