"""Fault injection against the simulator served on loopback (real sockets, real resets)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.simulator.helpers import batch_create, device, device_keys, sim_devices
from worker.simulator.faults import FaultProfile


@pytest.fixture
def http(sim_server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=sim_server, timeout=httpx.Timeout(10.0)) as client:
        yield client


def set_faults(sim_app: Any, spec: str) -> None:
    sim_app.state.api.faults = FaultProfile.parse(spec)


def keys(prefix: str, count: int = 2) -> list[dict[str, Any]]:
    return [device(f"{prefix}-{i:04d}") for i in range(count)]


class TestGatewayFaults:
    def test_http500_answers_500_and_creates_nothing(
        self, http: httpx.Client, sim_app: Any
    ) -> None:
        set_faults(sim_app, "http500=1")
        response = batch_create(http, keys("e500"))
        assert response.status_code == 500
        assert device_keys(http) == set()

    def test_http503_answers_503_with_an_html_page(self, http: httpx.Client, sim_app: Any) -> None:
        set_faults(sim_app, "http503=1")
        response = batch_create(http, keys("e503"))
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("text/html")
        assert response.text.lstrip().lower().startswith("<html")
        assert device_keys(http) == set()

    def test_http429_answers_429_with_retry_after(self, http: httpx.Client, sim_app: Any) -> None:
        set_faults(sim_app, "http429=1,retry_after_s=7")
        response = batch_create(http, keys("e429"))
        assert response.status_code == 429
        assert response.headers["Retry-After"] == "7"
        assert device_keys(http) == set()

    def test_without_faults_the_same_call_succeeds(self, http: httpx.Client) -> None:
        response = batch_create(http, keys("nofault"))
        assert response.status_code == 200
        assert response.json()["successSize"] == 2


class TestLostAnswers:
    def test_timeout_after_commit_leaves_the_devices_created(
        self, http: httpx.Client, sim_app: Any
    ) -> None:
        set_faults(sim_app, "timeout_after_commit=1")
        with pytest.raises(httpx.ReadTimeout):
            batch_create(http, keys("tmo"), timeout=httpx.Timeout(5.0, read=1.0))
        assert device_keys(http) == {"tmo-0000", "tmo-0001"}

    def test_reset_before_commit_drops_the_connection_and_creates_nothing(
        self, http: httpx.Client, sim_app: Any
    ) -> None:
        set_faults(sim_app, "reset_before_commit=1")
        with pytest.raises(httpx.ReadError, match="reset"):
            batch_create(http, keys("rbc"))
        assert device_keys(http) == set()

    def test_reset_after_commit_drops_the_connection_but_the_devices_exist(
        self, http: httpx.Client, sim_app: Any
    ) -> None:
        set_faults(sim_app, "reset_after_commit=1")
        with pytest.raises(httpx.ReadError, match="reset"):
            batch_create(http, keys("rac"))
        assert device_keys(http) == {"rac-0000", "rac-0001"}

    def test_the_lost_devices_are_found_by_search_afterwards(
        self, http: httpx.Client, sim_app: Any
    ) -> None:
        set_faults(sim_app, "reset_after_commit=1")
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            batch_create(http, keys("find"))
        set_faults(sim_app, "")
        retry = batch_create(http, keys("find")).json()
        assert [item["code"] for item in retry["data"]] == [11702, 11702]


class TestLostAnswersInProcess:
    """Without a socket, the in-process transport turns lost answers into the same httpx errors."""

    def test_a_reset_is_a_read_error(self, sim_http: httpx.Client, sim_app: Any) -> None:
        set_faults(sim_app, "reset_after_commit=1")
        with pytest.raises(httpx.ReadError):
            batch_create(sim_http, keys("iprac"))
        assert device_keys(sim_http) == {"iprac-0000", "iprac-0001"}

    def test_a_held_answer_is_a_read_timeout(self, sim_http: httpx.Client, sim_app: Any) -> None:
        set_faults(sim_app, "timeout_after_commit=1")
        with pytest.raises(httpx.ReadTimeout):
            batch_create(sim_http, keys("iptmo"))
        assert device_keys(sim_http) == {"iptmo-0000", "iptmo-0001"}


class TestLatency:
    def test_latency_is_waited_not_burned(self, http: httpx.Client, sim_app: Any) -> None:
        set_faults(sim_app, "latency_ms=400")
        wall, cpu = time.monotonic(), time.process_time()
        response = batch_create(http, keys("slow"))
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        assert response.status_code == 200
        assert wall >= 0.4
        # The server runs in this process: a busy wait would show up as ~0.4 s of CPU.
        assert cpu < 0.2


def statuses(http: httpx.Client, count: int) -> list[int]:
    return [batch_create(http, [device(None)]).status_code for _ in range(count)]


class TestProfiles:
    def test_a_seed_makes_the_draws_repeatable(self, http: httpx.Client) -> None:
        spec = {"http500": 0.5, "seed": 7}
        assert http.post("/__sim/faults", json=spec).status_code == 200
        first = statuses(http, 16)
        assert http.post("/__sim/faults", json=spec).status_code == 200
        second = statuses(http, 16)
        assert first == second
        assert set(first) == {200, 500}  # a fair coin over 16 calls shows both faces

    def test_another_seed_draws_another_sequence(self, http: httpx.Client) -> None:
        http.post("/__sim/faults", json={"http500": 0.5, "seed": 7})
        first = statuses(http, 16)
        http.post("/__sim/faults", json={"http500": 0.5, "seed": 8})
        assert statuses(http, 16) != first

    def test_posting_a_profile_replaces_the_whole_profile(
        self, http: httpx.Client, sim_app: Any
    ) -> None:
        assert http.post("/__sim/faults", json={"http500": 1.0}).status_code == 200
        assert batch_create(http, keys("repl")).status_code == 500
        answer = http.post("/__sim/faults", json={"latency_ms": 1})
        assert answer.status_code == 200
        assert answer.json()["http500"] == 0.0
        assert http.get("/__sim/faults").json() == answer.json()
        assert sim_app.state.api.faults.http500 == 0.0
        assert batch_create(http, keys("repl")).status_code == 200

    def test_the_profile_shown_can_be_posted_back(self, http: httpx.Client) -> None:
        shown = http.get("/__sim/faults").json()
        assert http.post("/__sim/faults", json=shown).status_code == 200

    @pytest.mark.parametrize(
        "spec",
        [
            pytest.param({"http501": 0.5}, id="unknown key"),
            pytest.param({"http500": 1.5}, id="rate above 1"),
            pytest.param({"http429": -0.1}, id="negative rate"),
            pytest.param({"item11714": 2}, id="item rate above 1"),
            pytest.param({"http500": "often"}, id="not a number"),
            pytest.param([["http500", 1]], id="not an object"),
        ],
    )
    def test_a_bad_profile_is_refused_with_400_and_keeps_the_old_one(
        self, http: httpx.Client, spec: Any
    ) -> None:
        http.post("/__sim/faults", json={"http503": 0.25})
        response = http.post("/__sim/faults", json=spec)
        assert response.status_code == 400
        assert response.json()["error"]
        assert http.get("/__sim/faults").json()["http503"] == 0.25


def test_stats_count_calls_and_devices(http: httpx.Client) -> None:
    before = http.get("/__sim/stats").json()
    assert (before["calls"], before["devices"]) == (0, 0)
    batch_create(http, keys("stats", 2))
    batch_create(http, keys("stats2", 3))
    after = http.get("/__sim/stats").json()
    assert after["calls"] == 2
    assert after["devices"] == 5 == len(sim_devices(http))
