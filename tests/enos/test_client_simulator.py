"""The client against the simulator, in-process and as a real server on loopback (strict auth).

Every test runs twice: through ``InProcessTransport`` with the default (permissive) simulator,
and over real sockets to uvicorn with ``auth="strict"``, where every call must carry a token the
simulator issued and a valid ``apim-signature``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pytest
from starlette.applications import Starlette

from tests.enos.support import FakeClock, option
from worker.enos import errors
from worker.enos.client import EnosClient
from worker.enos.models import CreateOption, ItemKind
from worker.enos.secret_box import Opener
from worker.simulator.api import SimConfig
from worker.simulator.inprocess import InProcessTransport
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG, Store

NO_KEY_APP = "7c1e9b2a-0d3f-4e5a-8b6c-9d0e1f2a3b4c"
NO_KEY_SECRET = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"


@pytest.fixture(params=["in-process", "loopback"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sim_config(mode: str) -> SimConfig:
    return SimConfig(auth="strict") if mode == "loopback" else SimConfig()


class Connect(Protocol):
    def __call__(
        self, app_key: str = DEMO_APP_KEY, app_secret: str = DEMO_APP_SECRET, **options: Any
    ) -> EnosClient: ...


@pytest.fixture
def connect(mode: str, request: pytest.FixtureRequest) -> Iterator[Connect]:
    """Makes clients to this test's simulator (closed at the end of the test)."""
    transport: InProcessTransport | None = None
    if mode == "loopback":
        url = request.getfixturevalue("sim_server")
    else:
        url, transport = "http://enos.test", request.getfixturevalue("sim_transport")
    opened: list[EnosClient] = []

    def make(
        app_key: str = DEMO_APP_KEY, app_secret: str = DEMO_APP_SECRET, **options: Any
    ) -> EnosClient:
        opened.append(EnosClient(url, app_key, app_secret, transport=transport, **options))
        return opened[-1]

    yield make
    for client in opened:
        client.close()


@pytest.fixture
def enos(connect: Connect) -> EnosClient:
    return connect()


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{i:04d}" for i in range(n)]


# ---------------------------------------------------------------------------- batchCreate
def test_batch_create_creates_every_device(enos: EnosClient, sim_store: Store) -> None:
    devices = [option(key) for key in keys("meter", 3)]
    result = enos.batch_create(DEMO_ORG, devices)
    assert (result.code, result.success_size, result.total_size) == (0, 3, 3)
    assert [item.kind for item in result.items] == [ItemKind.CREATED] * 3
    assert [item.device_key for item in result.items] == keys("meter", 3)
    for item in result.items:
        assert item.asset_id is not None
        stored = sim_store.assets[item.asset_id]
        assert (stored.device_key, stored.product_key) == (item.device_key, "pk-meter")
        assert item.device_secret is None and item.session_key is None


@pytest.mark.parametrize(
    "sim_config",
    [SimConfig(), SimConfig(mixed_code=99206, item_errors="minus1")],
    ids=["coded", "minus1-99206"],
)
def test_partial_success_is_matched_by_position(
    enos: EnosClient, sim_store: Store, sim_config: SimConfig
) -> None:
    enos.batch_create(DEMO_ORG, [option("taken-0001")])
    devices: list[CreateOption] = [
        option("new-0001"),
        option("taken-0001"),  # 11702
        option("other-0001", product_key="no-such-product"),  # 11611
        option(None),  # EnOS generates the key
        option("new-0001"),  # the same key again in one batch
    ]
    result = enos.batch_create(DEMO_ORG, devices)
    minus1 = sim_config.item_errors == "minus1"
    assert result.code == (99206 if minus1 else 0)
    assert (result.success_size, result.total_size) == (2, 5)
    assert [item.kind for item in result.items] == [
        ItemKind.CREATED,
        ItemKind.EXISTS,
        ItemKind.FAILED,
        ItemKind.CREATED,
        ItemKind.EXISTS,
    ]
    assert [item.error_code for item in result.items] == [
        None,
        11702,
        -1 if minus1 else 11611,
        None,
        11702,
    ]
    assert result.items[0].device_key == "new-0001"
    generated = result.items[3]
    assert generated.device_key and generated.asset_id in sim_store.assets
    assert sim_store.assets[generated.asset_id].device_key == generated.device_key
    assert len(sim_store.assets) == 3


def test_product_full(enos: EnosClient, sim_store: Store) -> None:
    sim_store.limits.product_cap = 2
    result = enos.batch_create(DEMO_ORG, [option(key) for key in keys("full", 3)])
    assert [item.kind for item in result.items][2] is ItemKind.PRODUCT_FULL
    assert result.items[2].error_code == 11739


def test_require_secret_opens_with_the_account_private_key(
    enos: EnosClient, sim_store: Store
) -> None:
    result = enos.batch_create(DEMO_ORG, [option(k) for k in keys("sec", 2)], require_secret=True)
    private_pem = sim_store.accounts[DEMO_APP_KEY].private_pem
    assert private_pem is not None
    opener = Opener(private_pem)
    for item in result.items:
        assert item.ok and item.device_secret and item.session_key and item.asset_id
        stored = sim_store.assets[item.asset_id]
        assert item.device_secret != stored.secret  # sealed, never in clear
        assert opener.open(item.device_secret, item.session_key) == stored.secret


# -------------------------------------------------------------------------------- lookups
def test_get_device(enos: EnosClient) -> None:
    (item,) = enos.batch_create(DEMO_ORG, [option("get-0001", name="Meter one")]).items
    by_key = enos.get_device(DEMO_ORG, product_key="pk-meter", device_key="get-0001")
    by_asset = enos.get_device(DEMO_ORG, asset_id=item.asset_id)
    assert by_key is not None and by_asset is not None
    assert by_key.asset_id == by_asset.asset_id == item.asset_id
    assert (by_key.product_key, by_key.device_key) == ("pk-meter", "get-0001")
    assert by_key.default_name == "Meter one"
    assert enos.get_device(DEMO_ORG, product_key="pk-meter", device_key="absent-01") is None
    assert enos.get_device(DEMO_ORG, product_key="pk-turbine", device_key="get-0001") is None
    with pytest.raises(ValueError):
        enos.get_device(DEMO_ORG, device_key="get-0001")


@pytest.mark.parametrize("group", [100, 300])
def test_find_devices_pages_and_groups(enos: EnosClient, group: int) -> None:
    meters, inverters = keys("find-m", 150), keys("find-i", 110)
    enos.batch_create(DEMO_ORG, [option(k) for k in meters])
    enos.batch_create(DEMO_ORG, [option(k, product_key="pk-inverter") for k in inverters])
    wanted = [*meters, *inverters, *keys("absent", 15)]
    found = enos.find_devices(DEMO_ORG, wanted, group=group)
    assert set(found) == {*meters, *inverters}
    assert found["find-i-0007"].product_key == "pk-inverter"
    assert found["find-m-0149"].device_key == "find-m-0149"
    assert enos.find_devices(DEMO_ORG, []) == {}


def test_count_devices(enos: EnosClient) -> None:
    assert enos.count_devices(DEMO_ORG, "pk-turbine") == 0
    enos.batch_create(DEMO_ORG, [option(k, product_key="pk-turbine") for k in keys("cnt", 7)])
    enos.batch_create(DEMO_ORG, [option("cnt-other")])
    assert enos.count_devices(DEMO_ORG, "pk-turbine") == 7


def test_delete_device(enos: EnosClient) -> None:
    (_, second) = enos.batch_create(DEMO_ORG, [option("del-0001"), option("del-0002")]).items
    assert enos.delete_device(DEMO_ORG, product_key="pk-meter", device_key="del-0001")
    assert enos.get_device(DEMO_ORG, product_key="pk-meter", device_key="del-0001") is None
    assert enos.delete_device(DEMO_ORG, asset_id=second.asset_id)
    assert not enos.delete_device(DEMO_ORG, asset_id=second.asset_id)
    assert enos.find_devices(DEMO_ORG, ["del-0001", "del-0002"]) == {}


def test_get_product(enos: EnosClient) -> None:
    product = enos.get_product(DEMO_ORG, "pk-meter")
    assert product is not None and product.product_key == "pk-meter"
    assert product.raw["orgId"] == DEMO_ORG
    assert enos.get_product(DEMO_ORG, "no-such-product") is None


# ------------------------------------------------------------------------------ refusals
def test_forbidden_org_is_permanent(enos: EnosClient, sim_store: Store) -> None:
    with pytest.raises(errors.PermanentError) as caught:
        enos.batch_create("o-forbidden", [option("deny-0001")])
    assert type(caught.value) is errors.PermanentError
    assert caught.value.code == 99403
    assert "o-forbidden" in str(caught.value)
    assert sim_store.device_count() == 0


def test_batch_over_the_limit_is_invalid_arguments(enos: EnosClient, sim_store: Store) -> None:
    sim_store.limits.batch_max = 2
    with pytest.raises(errors.InvalidArgumentsError) as caught:
        enos.batch_create(DEMO_ORG, [option(k) for k in keys("big", 3)])
    assert caught.value.code == 99400
    assert sim_store.device_count() == 0
    assert all(item.ok for item in enos.batch_create(DEMO_ORG, [option("big-0000")]).items)


def test_require_secret_without_an_rsa_key_is_a_configuration_error(
    connect: Connect, sim_store: Store
) -> None:
    sim_store.add_account(NO_KEY_APP, NO_KEY_SECRET, {DEMO_ORG}, None)
    enos = connect(NO_KEY_APP, NO_KEY_SECRET)
    with pytest.raises(errors.ConfigurationError) as caught:
        enos.batch_create(DEMO_ORG, [option("nokey-0001")], require_secret=True)
    assert type(caught.value) is errors.ConfigurationError
    assert caught.value.code == 11858
    assert "create the RSA key pair" in str(caught.value)
    assert sim_store.device_count() == 0
    # Without requireSecret the same account may create devices.
    assert enos.batch_create(DEMO_ORG, [option("nokey-0001")]).items[0].ok


def test_unknown_account_is_an_auth_error(connect: Connect) -> None:
    enos = connect("no-such-app-key", "whatever")
    with pytest.raises(errors.AuthError) as caught:
        enos.batch_create(DEMO_ORG, [option("auth-0001")])
    assert caught.value.code == 1002


def test_token_refresh_falls_back_when_the_simulator_forgot_its_tokens(
    connect: Connect, sim_app: Starlette
) -> None:
    clock = FakeClock()
    enos = connect(clock=clock)
    enos.batch_create(DEMO_ORG, [option("tok-0001")])
    clock.advance(7000)  # within the refresh margin of a 7,200 s token
    sim_app.state.api.tokens.tokens.clear()  # as after a restart: the refresh is refused (1204)
    sim_app.state.api.tokens.by_app.clear()
    assert enos.batch_create(DEMO_ORG, [option("tok-0002")]).items[0].ok
