"""V2.4 Batch Create Devices: whole-request errors, per-item errors and the forms of mixed answers.

Codes and messages from EnOS's V2.4 Batch Create Devices page ([BC24] in docs/enos-api.md) and
``docs/enos-api.md`` §2, §6, §7. Business errors are HTTP 200 with the code in the body.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.simulator.helpers import (
    ORG,
    batch_create,
    device,
    device_keys,
    get_token,
    post_action,
    sim_devices,
    token_headers,
)
from worker.simulator.api import SimConfig
from worker.simulator.faults import FaultProfile
from worker.simulator.state import Store


def whole_request_error(response: httpx.Response, code: int) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["code"] == code, answer
    assert answer["msg"]
    assert answer["requestId"]
    assert answer["data"] is None
    return answer


class TestWholeRequestErrors:
    def test_a_batch_over_the_limit_is_refused_with_99400_and_creates_nothing(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        sim_store.limits.batch_max = 3
        keys = [f"over-{i:04d}" for i in range(4)]
        whole_request_error(batch_create(sim_http, [device(k) for k in keys]), 99400)
        assert device_keys(sim_http) == set()

    def test_a_batch_at_the_limit_is_accepted(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        sim_store.limits.batch_max = 3
        answer = batch_create(sim_http, [device(f"limit-{i:04d}") for i in range(3)]).json()
        assert answer["code"] == 0
        assert answer["successSize"] == answer["totalSize"] == 3

    @pytest.mark.parametrize(
        "body",
        [
            pytest.param({}, id="no deviceList"),
            pytest.param({"deviceList": []}, id="empty deviceList"),
            pytest.param({"deviceList": None}, id="null deviceList"),
            pytest.param({"deviceList": {"productKey": "pk-meter"}}, id="deviceList not an array"),
        ],
    )
    def test_a_missing_or_empty_device_list_is_99400(
        self, sim_http: httpx.Client, body: dict[str, Any]
    ) -> None:
        response = post_action(
            sim_http, "/connect-service/v2.4/devices", "batchCreate", orjson.dumps(body)
        )
        answer = whole_request_error(response, 99400)
        assert "deviceList" in answer["msg"]

    def test_a_missing_org_id_is_99400(self, sim_http: httpx.Client) -> None:
        answer = whole_request_error(
            batch_create(sim_http, [device("noorg-0001")], org=None), 99400
        )
        assert "orgId" in answer["msg"]
        assert device_keys(sim_http) == set()

    def test_an_unknown_org_id_is_99400(self, sim_http: httpx.Client) -> None:
        response = batch_create(sim_http, [device("noorg-0001")], org="o-does-not-exist")
        assert "orgId" in whole_request_error(response, 99400)["msg"]

    def test_a_missing_action_is_99400(self, sim_http: httpx.Client) -> None:
        response = sim_http.post(
            "/connect-service/v2.4/devices",
            params={"orgId": ORG},
            content=orjson.dumps({"deviceList": [device("noact-0001")]}),
            headers={"apim-accesstoken": "blob"},
        )
        assert "action" in whole_request_error(response, 99400)["msg"]

    def test_the_demo_account_may_not_touch_the_forbidden_org(self, sim_http: httpx.Client) -> None:
        headers = token_headers(get_token(sim_http))
        response = batch_create(
            sim_http, [device("forbid-0001")], org="o-forbidden", headers=headers
        )
        whole_request_error(response, 99403)
        assert device_keys(sim_http) == set()

    def test_require_secret_without_an_rsa_key_is_11858(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        sim_store.add_product("o-nokey-store", "pk-nokey")
        sim_store.add_account(
            "7a1b2c3d-0001-4000-8000-000000000001",
            "9f8e7d6c-0001-4000-8000-000000000001",
            {"o-nokey-store"},
            None,
        )
        token = get_token(
            sim_http,
            "7a1b2c3d-0001-4000-8000-000000000001",
            "9f8e7d6c-0001-4000-8000-000000000001",
        )
        response = batch_create(
            sim_http,
            [device("nokey-0001", product="pk-nokey")],
            org="o-nokey-store",
            headers=token_headers(token),
            require_secret=True,
        )
        answer = whole_request_error(response, 11858)
        assert "public key" in answer["msg"]
        assert device_keys(sim_http) == set()

    def test_an_account_registered_without_a_key_over_http_gets_11858(
        self, sim_http: httpx.Client
    ) -> None:
        app_key, app_secret = (
            "7a1b2c3d-0002-4000-8000-000000000002",
            "9f8e7d6c-0002-4000-8000-000000000002",
        )
        registered = sim_http.post(
            "/__sim/accounts",
            json={"appKey": app_key, "appSecret": app_secret, "orgs": ["o-nokey-http"]},
        )
        assert registered.status_code == 200
        assert (
            sim_http.post(
                "/__sim/products", json={"orgId": "o-nokey-http", "productKey": "pk-nokey"}
            ).status_code
            == 200
        )
        headers = token_headers(get_token(sim_http, app_key, app_secret))
        response = batch_create(
            sim_http,
            [device("nokey-0002", product="pk-nokey")],
            org="o-nokey-http",
            headers=headers,
            require_secret=True,
        )
        whole_request_error(response, 11858)
        # The same account without requireSecret creates the device.
        ok = batch_create(
            sim_http,
            [device("nokey-0002", product="pk-nokey")],
            org="o-nokey-http",
            headers=headers,
        ).json()
        assert ok["code"] == 0 and ok["successSize"] == 1

    def test_a_require_secret_that_is_not_a_boolean_is_99400(self, sim_http: httpx.Client) -> None:
        body = orjson.dumps({"deviceList": [device("rs-00001")], "requireSecret": "yes"})
        response = post_action(sim_http, "/connect-service/v2.4/devices", "batchCreate", body)
        whole_request_error(response, 99400)


class TestBodiesThatAreNotJson:
    @pytest.mark.parametrize(
        "body",
        [
            pytest.param(b"deviceList=1", id="form text"),
            pytest.param(b'{"deviceList": [', id="truncated"),
            pytest.param(b"\xff\xfe{}", id="not utf-8"),
        ],
    )
    def test_a_body_that_is_not_json_gets_a_400(self, sim_http: httpx.Client, body: bytes) -> None:
        response = post_action(sim_http, "/connect-service/v2.4/devices", "batchCreate", body)
        assert response.status_code == 400
        assert "JSON" in response.json()["msg"]

    def test_a_json_body_that_is_not_an_object_gets_a_400(self, sim_http: httpx.Client) -> None:
        body = orjson.dumps([device("arr-00001")])
        response = post_action(sim_http, "/connect-service/v2.4/devices", "batchCreate", body)
        assert response.status_code == 400
        assert response.json()["code"] == 99400


class TestItemErrors:
    def test_an_existing_device_key_is_11702(self, sim_http: httpx.Client) -> None:
        first = batch_create(sim_http, [device("dup-00001")]).json()
        assert first["data"][0]["code"] == 0
        answer = batch_create(sim_http, [device("dup-00001"), device("dup-00002")]).json()

        assert answer["code"] == 0
        assert answer["successSize"] == 1
        assert answer["totalSize"] == 2
        assert answer["data"][0]["code"] == 11702
        assert answer["data"][0]["msg"] == "DeviceKey existed"
        assert answer["data"][1]["code"] == 0
        assert [d["deviceKey"] for d in sim_devices(sim_http)].count("dup-00001") == 1

    def test_a_key_repeated_inside_one_batch_is_created_once_then_11702(
        self, sim_http: httpx.Client
    ) -> None:
        answer = batch_create(
            sim_http, [device("twice-0001"), device("twice-0001", product="pk-turbine")]
        ).json()
        assert [item["code"] for item in answer["data"]] == [0, 11702]
        assert answer["successSize"] == 1
        stored = [d for d in sim_devices(sim_http) if d["deviceKey"] == "twice-0001"]
        assert [d["productKey"] for d in stored] == ["pk-meter"]

    def test_11714_hits_only_items_without_a_device_key(
        self, sim_http: httpx.Client, sim_app: Any
    ) -> None:
        sim_app.state.api.faults = FaultProfile.parse("item11714=1.0")
        options = [device("keyed-0001"), device(None), device("keyed-0002"), device(None)]
        answer = batch_create(sim_http, options).json()

        assert [item["code"] for item in answer["data"]] == [0, 11714, 0, 11714]
        assert answer["data"][1]["msg"] == "Generate deviceKey failed"
        assert answer["successSize"] == 2
        assert device_keys(sim_http) == {"keyed-0001", "keyed-0002"}

    def test_without_the_fault_keyless_items_get_a_valid_generated_key(
        self, sim_http: httpx.Client
    ) -> None:
        answer = batch_create(sim_http, [device(None), device(None)]).json()
        keys = [item["data"]["deviceKey"] for item in answer["data"]]
        assert len(set(keys)) == 2
        for key in keys:
            assert 4 <= len(key) <= 64
            assert all(c.isascii() and (c.isalnum() or c in "._-") for c in key)
        assert device_keys(sim_http) == set(keys)

    def test_a_full_product_answers_11739_for_the_devices_beyond_its_cap(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        sim_store.limits.product_cap = 2
        first = batch_create(sim_http, [device("cap-00001")]).json()
        assert first["successSize"] == 1
        answer = batch_create(
            sim_http,
            [device("cap-00002"), device("cap-00003"), device("cap-00004", product="pk-turbine")],
        ).json()

        assert [item["code"] for item in answer["data"]] == [0, 11739, 0]
        assert answer["data"][1]["msg"] == "Exceed max device size"
        assert device_keys(sim_http) == {"cap-00001", "cap-00002", "cap-00004"}

    def test_an_unknown_product_fails_only_its_item(self, sim_http: httpx.Client) -> None:
        answer = batch_create(
            sim_http, [device("nopk-0001", product="pk-nowhere"), device("nopk-0002")]
        ).json()
        failed = answer["data"][0]
        assert failed["code"] not in (0, -1)
        assert "pk-nowhere" in failed["msg"]
        assert answer["data"][1]["code"] == 0
        assert device_keys(sim_http) == {"nopk-0002"}

    def test_a_product_of_another_org_is_unknown_here(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        sim_store.add_product("o-elsewhere", "pk-elsewhere")
        answer = batch_create(sim_http, [device("else-0001", product="pk-elsewhere")]).json()
        assert answer["data"][0]["code"] != 0
        assert answer["successSize"] == 0


class TestMixedAnswers:
    def test_by_default_a_mixed_answer_has_top_level_code_0(self, sim_http: httpx.Client) -> None:
        batch_create(sim_http, [device("mix-00001")])
        response = batch_create(sim_http, [device("mix-00001"), device("mix-00002")])
        assert response.status_code == 200
        answer = response.json()
        assert (answer["code"], answer["msg"]) == (0, "OK")
        assert (answer["successSize"], answer["totalSize"]) == (1, 2)
        assert answer["data"][0]["code"] == 11702
        assert answer["data"][0]["data"]["deviceKey"] == "mix-00001"

    @pytest.mark.parametrize("sim_config", [SimConfig(mixed_code=99206)])
    def test_mixed_code_99206_marks_a_partial_success(self, sim_http: httpx.Client) -> None:
        batch_create(sim_http, [device("mix-00001")])
        answer = batch_create(sim_http, [device("mix-00001"), device("mix-00002")]).json()
        assert answer["code"] == 99206
        assert answer["msg"] == "Partial Content Success"
        assert (answer["successSize"], answer["totalSize"]) == (1, 2)
        assert [item["code"] for item in answer["data"]] == [11702, 0]

    @pytest.mark.parametrize("sim_config", [SimConfig(mixed_code=99206)])
    def test_mixed_code_99206_leaves_a_full_success_at_0(self, sim_http: httpx.Client) -> None:
        answer = batch_create(sim_http, [device("mix-00003")]).json()
        assert (answer["code"], answer["msg"]) == (0, "OK")

    @pytest.mark.parametrize("sim_config", [SimConfig(item_errors="minus1")])
    def test_minus1_items_carry_code_minus1_the_message_and_null_data(
        self, sim_http: httpx.Client
    ) -> None:
        batch_create(sim_http, [device("m1-000001")])
        answer = batch_create(sim_http, [device("m1-000001"), device("m1-000002")]).json()
        assert answer["data"][0] == {"code": -1, "msg": "DeviceKey existed", "data": None}
        assert answer["data"][1]["code"] == 0
        assert answer["data"][1]["msg"] == "OK"
        assert answer["data"][1]["data"]["deviceKey"] == "m1-000002"
        assert (answer["successSize"], answer["totalSize"]) == (1, 2)
