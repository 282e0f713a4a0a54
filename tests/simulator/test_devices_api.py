"""Search, Get, Create and Delete Device, Get and Search Product (``docs/enos-api.md`` §4)."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.simulator.helpers import (
    DEVICES,
    ORG,
    PRODUCTS,
    SDK_HEADERS,
    batch_create,
    device,
    device_keys,
    get_action,
    post_action,
    search,
    sim_devices,
)
from worker.simulator.api import SimConfig
from worker.simulator.state import DEMO_PRODUCTS, Store

DELETE_PATH = "/connect-service/v2.1/devices"


def create(http: httpx.Client, *options: dict[str, Any]) -> list[str]:
    """Creates the devices, one call each so that they are ordered in time; their assetIds."""
    asset_ids = []
    for option in options:
        answer = batch_create(http, [option]).json()
        assert answer["data"][0]["code"] == 0, answer
        asset_ids.append(answer["data"][0]["data"]["assetId"])
    return asset_ids


def found_keys(answer: dict[str, Any]) -> list[str]:
    assert answer["code"] == 0, answer
    return [d["deviceKey"] for d in answer["data"]]


@pytest.fixture
def fleet(sim_http: httpx.Client) -> dict[str, str]:
    """Five devices over three products, created oldest to newest: deviceKey -> assetId."""
    options = [
        device("meter-001", product="pk-meter"),
        device("meter-002", product="pk-meter"),
        device("inv-001", product="pk-inverter"),
        device("turb-001", product="pk-turbine"),
        device("meter-003", product="pk-meter"),
    ]
    return dict(zip([o["deviceKey"] for o in options], create(sim_http, *options), strict=True))


class TestSearchDevice:
    def test_device_key_in_a_list(self, sim_http: httpx.Client, fleet: dict[str, str]) -> None:
        answer = search(sim_http, "deviceKey in ('meter-001','inv-001','nope-000')")
        assert sorted(found_keys(answer)) == ["inv-001", "meter-001"]

    def test_asset_id_in_a_list(self, sim_http: httpx.Client, fleet: dict[str, str]) -> None:
        wanted = f"assetId in ('{fleet['turb-001']}', '{fleet['meter-002']}')"
        answer = search(sim_http, wanted)
        assert sorted(d["assetId"] for d in answer["data"]) == sorted(
            [fleet["turb-001"], fleet["meter-002"]]
        )

    def test_product_key_equals(self, sim_http: httpx.Client, fleet: dict[str, str]) -> None:
        answer = search(sim_http, "productKey = 'pk-meter'")
        assert sorted(found_keys(answer)) == ["meter-001", "meter-002", "meter-003"]
        assert answer["pagination"]["totalSize"] == 3

    def test_and_with_parentheses(self, sim_http: httpx.Client, fleet: dict[str, str]) -> None:
        expression = (
            "productKey = 'pk-meter' and (deviceKey = 'meter-001' or deviceKey = 'inv-001')"
        )
        assert found_keys(search(sim_http, expression)) == ["meter-001"]

    def test_or_of_two_conditions(self, sim_http: httpx.Client, fleet: dict[str, str]) -> None:
        expression = "productKey = 'pk-turbine' or deviceKey in ('inv-001')"
        assert sorted(found_keys(search(sim_http, expression))) == ["inv-001", "turb-001"]

    def test_and_binds_tighter_than_or(self, sim_http: httpx.Client, fleet: dict[str, str]) -> None:
        expression = "deviceKey = 'inv-001' or productKey = 'pk-meter' and deviceKey = 'meter-002'"
        assert sorted(found_keys(search(sim_http, expression))) == ["inv-001", "meter-002"]

    def test_keywords_are_case_insensitive(
        self, sim_http: httpx.Client, fleet: dict[str, str]
    ) -> None:
        expression = "deviceKey IN ('inv-001') OR deviceKey = 'turb-001'"
        assert sorted(found_keys(search(sim_http, expression))) == ["inv-001", "turb-001"]

    def test_results_are_newest_first(self, sim_http: httpx.Client, fleet: dict[str, str]) -> None:
        answer = search(sim_http, page_size=10)
        assert found_keys(answer) == ["meter-003", "turb-001", "inv-001", "meter-002", "meter-001"]

    def test_without_pagination_a_page_has_10_devices(self, sim_http: httpx.Client) -> None:
        batch_create(sim_http, [device(f"page-{i:04d}") for i in range(12)])
        answer = search(sim_http)
        assert len(answer["data"]) == 10
        assert answer["pagination"]["totalSize"] == 12
        assert answer["pagination"]["pageSize"] == 10

    def test_pages_split_the_results_and_report_the_total(
        self, sim_http: httpx.Client, fleet: dict[str, str]
    ) -> None:
        pages = [search(sim_http, page_no=n, page_size=2) for n in (1, 2, 3, 4)]
        assert [found_keys(p) for p in pages] == [
            ["meter-003", "turb-001"],
            ["inv-001", "meter-002"],
            ["meter-001"],
            [],
        ]
        for number, page in enumerate(pages, start=1):
            assert page["pagination"]["totalSize"] == 5
            assert page["pagination"]["pageNo"] == number
            assert page["pagination"]["pageSize"] == 2

    def test_a_page_holds_at_most_200(self, sim_http: httpx.Client) -> None:
        batch_create(sim_http, [device(f"many-{i:04d}") for i in range(201)])
        answer = search(sim_http, page_size=200)
        assert len(answer["data"]) == 200
        assert answer["pagination"]["totalSize"] == 201
        second = search(sim_http, page_no=2, page_size=200)
        assert found_keys(second) == ["many-0000"]

    @pytest.mark.parametrize("size", [201, 0, -1])
    def test_a_page_size_outside_1_to_200_is_99400(self, sim_http: httpx.Client, size: int) -> None:
        answer = search(sim_http, page_size=size)
        assert answer["code"] == 99400
        assert answer["data"] is None

    def test_page_number_0_is_99400(self, sim_http: httpx.Client) -> None:
        assert search(sim_http, page_no=0, page_size=10)["code"] == 99400

    @pytest.mark.parametrize(
        "expression",
        [
            "deviceKey in ('a'",
            "deviceKey = ",
            "deviceKey like 'a%'",
            "firmwareVersion = '1.0'",
            "deviceKey = 'a' and",
            "(deviceKey = 'a'",
        ],
    )
    def test_an_expression_it_cannot_read_is_99400(
        self, sim_http: httpx.Client, expression: str
    ) -> None:
        answer = search(sim_http, expression)
        assert answer["code"] == 99400
        assert "expression" in answer["msg"]

    @pytest.mark.parametrize("expression", [42, ["deviceKey = 'a'"], {"deviceKey": "a"}])
    def test_an_expression_that_is_not_text_is_99400(
        self, sim_http: httpx.Client, expression: Any
    ) -> None:
        body = orjson.dumps({"expression": expression})
        response = post_action(sim_http, DEVICES, "search", body)
        assert response.status_code == 200
        assert response.json()["code"] == 99400

    def test_search_sees_only_its_own_org(
        self, sim_http: httpx.Client, sim_store: Store, fleet: dict[str, str]
    ) -> None:
        sim_store.add_product("o-search-other", "pk-meter")
        answer = batch_create(sim_http, [device("other-001")], org="o-search-other").json()
        assert answer["successSize"] == 1
        assert found_keys(search(sim_http, "deviceKey in ('other-001')")) == []
        assert (
            found_keys(search(sim_http, "deviceKey in ('meter-001')", org="o-search-other")) == []
        )


class TestGetDevice:
    def test_by_asset_id(self, sim_http: httpx.Client) -> None:
        option = device(
            "get-00001",
            deviceName={"defaultValue": "Pump", "i18nValue": {"zh_CN": "泵"}},
            timezone="America/Los_Angeles",
            deviceDesc="north field",
            deviceAttributes={"serial": 111111},
            deviceTags={"site": "north"},
        )
        (asset_id,) = create(sim_http, option)
        answer = get_action(sim_http, DEVICES, "get", assetId=asset_id).json()
        assert answer["code"] == 0
        data = answer["data"]
        assert data["orgId"] == ORG
        assert data["assetId"] == asset_id
        assert data["productKey"] == "pk-meter"
        assert data["deviceKey"] == "get-00001"
        assert data["deviceName"] == {"defaultValue": "Pump", "i18nValue": {"zh_CN": "泵"}}
        assert data["timezone"] == "America/Los_Angeles"
        assert data["deviceDesc"] == "north field"
        assert data["deviceAttributes"] == {"serial": 111111}
        assert data["deviceTags"] == {"site": "north"}
        assert isinstance(data["createTime"], int)
        assert "deviceSecret" not in data

    def test_by_product_key_and_device_key(self, sim_http: httpx.Client) -> None:
        (asset_id,) = create(sim_http, device("get-00002", product="pk-turbine"))
        answer = get_action(
            sim_http, DEVICES, "get", productKey="pk-turbine", deviceKey="get-00002"
        ).json()
        assert answer["code"] == 0
        assert answer["data"]["assetId"] == asset_id

    @pytest.mark.parametrize(
        "params",
        [
            pytest.param({"assetId": "NoSuchId"}, id="unknown assetId"),
            pytest.param({"productKey": "pk-meter", "deviceKey": "nope-0001"}, id="unknown key"),
            pytest.param(
                {"productKey": "pk-inverter", "deviceKey": "get-00003"}, id="other product"
            ),
        ],
    )
    def test_a_device_that_does_not_exist_is_11404(
        self, sim_http: httpx.Client, params: dict[str, str]
    ) -> None:
        create(sim_http, device("get-00003", product="pk-meter"))
        query = {"action": "get", "orgId": ORG, **params}
        response = sim_http.get(DEVICES, params=query, headers=SDK_HEADERS)
        assert response.status_code == 200
        answer = response.json()
        assert answer["code"] == 11404
        assert answer["data"] is None

    def test_without_asset_id_or_keys_it_is_99400(self, sim_http: httpx.Client) -> None:
        answer = get_action(sim_http, DEVICES, "get", deviceKey="get-00004").json()
        assert answer["code"] == 99400


class TestDeleteDevice:
    def test_delete_by_asset_id(self, sim_http: httpx.Client) -> None:
        (asset_id,) = create(sim_http, device("del-00001"))
        answer = post_action(sim_http, DELETE_PATH, "delete", assetId=asset_id).json()
        assert (answer["code"], answer["msg"], answer["data"]) == (0, "OK", None)
        assert device_keys(sim_http) == set()
        assert get_action(sim_http, DEVICES, "get", assetId=asset_id).json()["code"] == 11404

    def test_delete_by_product_key_and_device_key(self, sim_http: httpx.Client) -> None:
        create(sim_http, device("del-00002"), device("del-00003"))
        answer = post_action(
            sim_http, DELETE_PATH, "delete", productKey="pk-meter", deviceKey="del-00002"
        ).json()
        assert answer["code"] == 0
        assert device_keys(sim_http) == {"del-00003"}

    def test_deleting_a_missing_device_is_11404(self, sim_http: httpx.Client) -> None:
        (asset_id,) = create(sim_http, device("del-00004"))
        assert post_action(sim_http, DELETE_PATH, "delete", assetId=asset_id).json()["code"] == 0
        again = post_action(sim_http, DELETE_PATH, "delete", assetId=asset_id).json()
        assert again["code"] == 11404

    def test_a_deleted_key_can_be_created_again_and_frees_its_product_slot(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        sim_store.limits.product_cap = 1
        (asset_id,) = create(sim_http, device("del-00005"))
        post_action(sim_http, DELETE_PATH, "delete", assetId=asset_id)
        answer = batch_create(sim_http, [device("del-00005")]).json()
        assert answer["data"][0]["code"] == 0
        assert answer["data"][0]["data"]["assetId"] != asset_id


class TestCreateDevice:
    def test_create_v24_returns_the_new_device(self, sim_http: httpx.Client) -> None:
        response = post_action(sim_http, DEVICES, "create", orjson.dumps(device("one-00001")))
        assert response.status_code == 200
        answer = response.json()
        assert (answer["code"], answer["msg"]) == (0, "OK")
        assert answer["data"]["deviceKey"] == "one-00001"
        assert answer["data"]["productKey"] == "pk-meter"
        assert answer["data"]["assetId"]
        assert "deviceSecret" not in answer["data"]
        assert device_keys(sim_http) == {"one-00001"}

    def test_create_of_an_existing_key_is_11702(self, sim_http: httpx.Client) -> None:
        create(sim_http, device("one-00002"))
        answer = post_action(sim_http, DEVICES, "create", orjson.dumps(device("one-00002"))).json()
        assert answer["code"] == 11702
        assert answer["data"] is None

    def test_create_of_an_invalid_device_is_refused(self, sim_http: httpx.Client) -> None:
        body = orjson.dumps(device("one-00003", timezone="UTC+08:00"))
        answer = post_action(sim_http, DEVICES, "create", body).json()
        assert answer["code"] != 0
        assert "timezone" in answer["msg"]
        assert device_keys(sim_http) == set()


class TestProducts:
    def test_get_product(self, sim_http: httpx.Client) -> None:
        answer = get_action(sim_http, PRODUCTS, "get", productKey="pk-turbine").json()
        assert answer["code"] == 0
        assert answer["data"]["productKey"] == "pk-turbine"
        assert answer["data"]["orgId"] == ORG
        assert answer["data"]["productType"] in ("Device", "Gateway")

    def test_an_unknown_product_is_11611(self, sim_http: httpx.Client) -> None:
        response = get_action(sim_http, PRODUCTS, "get", productKey="pk-nowhere")
        assert response.status_code == 200
        answer = response.json()
        assert answer["code"] == 11611
        assert answer["data"] is None

    def test_search_product_by_key(self, sim_http: httpx.Client) -> None:
        answer = search(sim_http, "productKey in ('pk-meter', 'pk-turbine')", path=PRODUCTS)
        assert answer["code"] == 0
        assert sorted(p["productKey"] for p in answer["data"]) == ["pk-meter", "pk-turbine"]
        assert answer["pagination"]["totalSize"] == 2

    def test_search_product_without_expression_lists_the_org_products(
        self, sim_http: httpx.Client
    ) -> None:
        answer = search(sim_http, page_size=50, path=PRODUCTS)
        assert sorted(p["productKey"] for p in answer["data"]) == sorted(DEMO_PRODUCTS)
        assert answer["pagination"]["totalSize"] == len(DEMO_PRODUCTS)

    def test_search_product_pages(self, sim_http: httpx.Client) -> None:
        first = search(sim_http, page_no=1, page_size=2, path=PRODUCTS)
        third = search(sim_http, page_no=3, page_size=2, path=PRODUCTS)
        assert len(first["data"]) == 2
        assert len(third["data"]) == len(DEMO_PRODUCTS) - 4
        assert search(sim_http, page_size=201, path=PRODUCTS)["code"] == 99400


class TestOlderVersions:
    def test_get_device_v21_returns_the_secret_in_plain_text(self, sim_http: httpx.Client) -> None:
        (asset_id,) = create(sim_http, device("v21-00001"))
        stored = {d["assetId"]: d["deviceSecret"] for d in sim_devices(sim_http)}
        answer = get_action(sim_http, "/connect-service/v2.1/devices", "get", assetId=asset_id)
        data = answer.json()["data"]
        assert data["deviceSecret"] == stored[asset_id]
        assert "sessionKey" not in data


@pytest.mark.parametrize("sim_config", [SimConfig(item_errors="minus1")])
def test_the_minus1_item_form_does_not_change_create_device_codes(
    sim_http: httpx.Client,
) -> None:
    create(sim_http, device("m1one-001"))
    answer = post_action(sim_http, DEVICES, "create", orjson.dumps(device("m1one-001"))).json()
    assert answer["code"] == 11702
    assert answer["msg"] == "DeviceKey existed"
