"""The simulator's state file: a restart keeps every device; seeding again duplicates nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.harness.processes import free_port
from tests.simulator.helpers import (
    DEVICES,
    ORG,
    batch_create,
    device,
    get_action,
    search,
    sim_devices,
)
from worker.enos.secret_box import Opener
from worker.simulator.api import SimConfig
from worker.simulator.app import create_app
from worker.simulator.faults import FaultProfile
from worker.simulator.inprocess import InProcessTransport
from worker.simulator.state import DEMO_APP_KEY, DEMO_PRODUCTS, Store


@contextmanager
def in_process(store: Store) -> Iterator[httpx.Client]:
    transport = InProcessTransport(create_app(store, SimConfig(), FaultProfile()))
    try:
        with httpx.Client(base_url="http://enos.test", transport=transport) as http:
            yield http
    finally:
        transport.close()


def snapshot(http: httpx.Client) -> list[tuple[str, str, str, str]]:
    return sorted(
        (d["orgId"], d["assetId"], d["productKey"], d["deviceKey"]) for d in sim_devices(http)
    )


class TestStoreReopen:
    def test_a_reopened_store_has_the_devices_and_their_details(self, tmp_path: Path) -> None:
        path = tmp_path / "state.sqlite"
        store = Store(path)
        store.add_product(ORG, "pk-meter")
        with in_process(store) as http:
            option = device(
                "keep-0001",
                deviceName={"defaultValue": "Kept", "i18nValue": {"en_US": "Kept"}},
                deviceTags={"site": "north"},
                deviceAttributes={"serial": 7},
            )
            batch_create(http, [option, device("keep-0002")])
            before = snapshot(http)
        store.close()

        reopened = Store(path)
        with in_process(reopened) as http:
            assert snapshot(http) == before
            got = get_action(http, DEVICES, "get", productKey="pk-meter", deviceKey="keep-0001")
            data = got.json()["data"]
            assert data["deviceName"] == {"defaultValue": "Kept", "i18nValue": {"en_US": "Kept"}}
            assert data["deviceTags"] == {"site": "north"}
            assert data["deviceAttributes"] == {"serial": 7}
            again = batch_create(http, [device("keep-0001")]).json()
            assert again["data"][0]["code"] == 11702
        reopened.close()

    def test_devices_created_after_a_reopen_are_newest_first(self, tmp_path: Path) -> None:
        path = tmp_path / "state.sqlite"
        store = Store(path)
        store.add_product(ORG, "pk-meter")
        with in_process(store) as http:
            batch_create(http, [device("old-00001")])
            batch_create(http, [device("old-00002")])
        store.close()
        reopened = Store(path)
        with in_process(reopened) as http:
            batch_create(http, [device("new-00001")])
            keys = [d["deviceKey"] for d in search(http, page_size=10)["data"]]
        reopened.close()
        assert keys == ["new-00001", "old-00002", "old-00001"]

    def test_the_product_cap_counts_devices_from_before_the_reopen(self, tmp_path: Path) -> None:
        path = tmp_path / "state.sqlite"
        store = Store(path)
        store.add_product(ORG, "pk-meter")
        with in_process(store) as http:
            batch_create(http, [device("cap-00001"), device("cap-00002")])
        store.close()
        reopened = Store(path)
        reopened.limits.product_cap = 2
        with in_process(reopened) as http:
            answer = batch_create(http, [device("cap-00003")]).json()
        reopened.close()
        assert answer["data"][0]["code"] == 11739

    def test_deletes_are_kept_too(self, tmp_path: Path) -> None:
        path = tmp_path / "state.sqlite"
        store = Store(path)
        store.add_product(ORG, "pk-meter")
        with in_process(store) as http:
            created = batch_create(http, [device("gone-0001"), device("stay-0001")]).json()
            asset_id = created["data"][0]["data"]["assetId"]
            http.post(
                "/connect-service/v2.1/devices",
                params={"action": "delete", "orgId": ORG, "assetId": asset_id},
                headers={"apim-accesstoken": "blob"},
            )
        store.close()
        reopened = Store(path)
        with in_process(reopened) as http:
            assert [d["deviceKey"] for d in sim_devices(http)] == ["stay-0001"]
        reopened.close()

    def test_the_demo_account_and_its_key_survive_and_seeding_again_changes_nothing(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "state.sqlite"
        store = Store(path)
        pem = store.seed_demo().private_pem
        store.close()

        reopened = Store(path)
        assert reopened.accounts[DEMO_APP_KEY].private_pem == pem
        reopened.seed_demo()
        assert reopened.accounts[DEMO_APP_KEY].private_pem == pem
        assert sorted(reopened.orgs[ORG].products) == sorted(DEMO_PRODUCTS)
        reopened.close()


# ------------------------------------------------------------------------------ the real CLI
CLI = Path(sys.executable).with_name("enos-import")


@contextmanager
def cli_simulator(
    state: Path, key_out: Path, tmp_path: Path, stop: signal.Signals = signal.SIGTERM
) -> Iterator[str]:
    """``enos-import simulator`` in a subprocess: yields its URL once it answers, then stops it."""
    port = free_port()
    log = (tmp_path / f"simulator-{port}.log").open("wb")
    process = subprocess.Popen(
        [
            str(CLI),
            "simulator",
            "--port",
            str(port),
            "--seed-demo",
            "--state",
            str(state),
            "--private-key-out",
            str(key_out),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the simulator exited with {process.returncode}: {log_text(log)}")
            try:
                if httpx.get(f"{url}/__sim/stats", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the simulator did not answer within 30 s: {log_text(log)}")
            time.sleep(0.05)
        yield url
    finally:
        process.send_signal(stop)
        try:
            # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal.
            assert process.wait(timeout=15) in (0, -stop), log_text(log)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            log.close()


def log_text(log: Any) -> str:
    log.flush()
    return Path(log.name).read_text(errors="replace")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGKILL], ids=["terminated", "killed"])
def test_a_restarted_cli_simulator_keeps_its_devices_and_key(
    tmp_path: Path, stop: signal.Signals
) -> None:
    state, key_out = tmp_path / "sim.sqlite", tmp_path / "demo-key.pem"

    first_run = cli_simulator(state, key_out, tmp_path, stop)
    with first_run as url, httpx.Client(base_url=url) as http:
        answer = batch_create(
            http,
            [device("cli-00001"), device("cli-00002", product="pk-turbine")],
            require_secret=True,
        ).json()
        assert answer["successSize"] == 2
        first_devices = snapshot(http)
        sealed = answer["data"][0]["data"]
        first_products = search(http, page_size=50, path="/connect-service/v2.4/products")
    pem = key_out.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert key_out.stat().st_mode & 0o777 == 0o600

    with cli_simulator(state, key_out, tmp_path) as url, httpx.Client(base_url=url) as http:
        assert snapshot(http) == first_devices
        again = batch_create(http, [device("cli-00001"), device("cli-00003")]).json()
        assert [item["code"] for item in again["data"]] == [11702, 0]
        products = search(http, page_size=50, path="/connect-service/v2.4/products")
        assert products["pagination"]["totalSize"] == first_products["pagination"]["totalSize"]
        assert products["pagination"]["totalSize"] == len(DEMO_PRODUCTS)
        stored = {d["deviceKey"]: d["deviceSecret"] for d in sim_devices(http)}
        # The sealed secret of the first run still opens with the (unchanged) key file.
        follow_up = batch_create(http, [device("cli-00004")], require_secret=True).json()
        assert follow_up["data"][0]["code"] == 0
    assert key_out.read_bytes() == pem
    assert Opener(pem).open(sealed["deviceSecret"], sealed["sessionKey"]) == stored["cli-00001"]
