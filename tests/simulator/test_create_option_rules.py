"""Every documented CreateOption rule, one case each, from the literal values of the reference.

Sources: ``docs/enos-api.md`` §1.1-§1.5 (from EnOS's Limitations page and the FAQ) and the
V2.4 Batch Create Devices page. A rejected device is a failed item of a batch that otherwise
answers normally; an accepted one is created.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.simulator.helpers import batch_create, device, device_keys

NAME = {"defaultValue": "Pump"}


def one_item(sim_http: httpx.Client, option: dict[str, Any]) -> dict[str, Any]:
    response = batch_create(sim_http, [option])
    assert response.status_code == 200
    answer = response.json()
    assert answer["totalSize"] == 1
    assert len(answer["data"]) == 1
    item: dict[str, Any] = answer["data"][0]
    assert answer["successSize"] == (1 if item["code"] == 0 else 0)
    return item


def assert_accepted(sim_http: httpx.Client, option: dict[str, Any]) -> None:
    item = one_item(sim_http, option)
    assert item["code"] == 0, item
    assert item["msg"] == "OK"
    assert item["data"]["assetId"]
    assert item["data"]["productKey"] == option["productKey"]
    if "deviceKey" in option:
        assert item["data"]["deviceKey"] == option["deviceKey"]
        assert option["deviceKey"] in device_keys(sim_http)


def assert_rejected(sim_http: httpx.Client, option: dict[str, Any], field: str) -> None:
    item = one_item(sim_http, option)
    assert item["code"] != 0, item
    assert item["msg"] != "OK"
    assert field in item["msg"], f"the message should name {field!r}: {item['msg']!r}"
    assert device_keys(sim_http) == set()


class TestMandatoryFields:
    def test_a_minimal_device_with_product_name_and_timezone_is_created(
        self, sim_http: httpx.Client
    ) -> None:
        assert_accepted(
            sim_http, {"productKey": "pk-meter", "deviceName": NAME, "timezone": "+08:00"}
        )

    @pytest.mark.parametrize("field", ["productKey", "deviceName", "timezone"])
    def test_a_device_without_a_mandatory_field_is_rejected(
        self, sim_http: httpx.Client, field: str
    ) -> None:
        option = device("dev-0001")
        del option[field]
        assert_rejected(sim_http, option, field)

    def test_a_device_name_without_default_value_is_rejected(self, sim_http: httpx.Client) -> None:
        name = {"i18nValue": {"en_US": "Pump"}}
        assert_rejected(sim_http, device("dev-0001", deviceName=name), "defaultValue")

    def test_the_device_key_may_be_left_out(self, sim_http: httpx.Client) -> None:
        item = one_item(sim_http, device(None))
        assert item["code"] == 0
        assert item["data"]["deviceKey"]


class TestDeviceKey:
    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("abcd", id="4 characters"),
            pytest.param("k" * 64, id="64 characters"),
            pytest.param("Ab9.x_y-z", id="letters digits dot underscore dash"),
        ],
    )
    def test_a_device_key_of_4_to_64_allowed_characters_is_accepted(
        self, sim_http: httpx.Client, key: str
    ) -> None:
        assert_accepted(sim_http, device(key))

    @pytest.mark.parametrize(
        "key",
        [
            pytest.param("abc", id="3 characters"),
            pytest.param("k" * 65, id="65 characters"),
            pytest.param("dev 0001", id="a space"),
            pytest.param("dev/0001", id="a slash"),
            pytest.param("", id="empty"),
        ],
    )
    def test_a_device_key_outside_the_rule_is_rejected(
        self, sim_http: httpx.Client, key: str
    ) -> None:
        assert_rejected(sim_http, device(key), "deviceKey")


class TestTimezone:
    @pytest.mark.parametrize("zone", ["+08:00", "-05:00", "America/Los_Angeles"])
    def test_a_utc_offset_or_an_iana_name_is_accepted(
        self, sim_http: httpx.Client, zone: str
    ) -> None:
        assert_accepted(sim_http, device("dev-0001", timezone=zone))

    @pytest.mark.parametrize("zone", ["+8:00", "UTC+08:00", "Mars/Base"])
    def test_other_timezone_forms_are_rejected(self, sim_http: httpx.Client, zone: str) -> None:
        assert_rejected(sim_http, device("dev-0001", timezone=zone), "timezone")


class TestDeviceName:
    @pytest.mark.parametrize("locale", ["en_US", "zh_CN", "ja_JP", "es_ES"])
    def test_a_documented_locale_is_accepted(self, sim_http: httpx.Client, locale: str) -> None:
        name = {"defaultValue": "Pump", "i18nValue": {locale: "Pump 1"}}
        assert_accepted(sim_http, device("dev-0001", deviceName=name))

    @pytest.mark.parametrize("locale", ["fr_FR", "en-US", "default"])
    def test_another_locale_key_is_rejected(self, sim_http: httpx.Client, locale: str) -> None:
        name = {"defaultValue": "Pump", "i18nValue": {locale: "Pump 1"}}
        assert_rejected(sim_http, device("dev-0001", deviceName=name), locale)

    def test_an_empty_i18n_value_as_in_the_samples_is_accepted(
        self, sim_http: httpx.Client
    ) -> None:
        assert_accepted(
            sim_http, device("dev-0001", deviceName={"defaultValue": "P", "i18nValue": {}})
        )


def tags(count: int) -> dict[str, str]:
    return {f"tag{i}": "value" for i in range(count)}


class TestDeviceTags:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(tags(100), id="100 tags"),
            pytest.param({"k" * 50: "v"}, id="key of 50 characters"),
            pytest.param({"site/zone_A-1": "v"}, id="key with slash underscore dash"),
            pytest.param({"site": "v" * 200}, id="value of 200 characters"),
            pytest.param({"site": "tag value"}, id="value with an inner space"),
        ],
    )
    def test_tags_within_the_limits_are_accepted(
        self, sim_http: httpx.Client, value: dict[str, str]
    ) -> None:
        assert_accepted(sim_http, device("dev-0001", deviceTags=value))

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param(tags(101), id="101 tags"),
            pytest.param({"k" * 51: "v"}, id="key of 51 characters"),
            pytest.param({"site.zone": "v"}, id="key with a dot"),
            pytest.param({"site zone": "v"}, id="key with a space"),
            pytest.param({"site": "v" * 201}, id="value of 201 characters"),
            pytest.param({"site": " north"}, id="value with a leading space"),
            pytest.param({"site": "north "}, id="value with a trailing space"),
        ],
    )
    def test_tags_beyond_the_limits_are_rejected(
        self, sim_http: httpx.Client, value: dict[str, str]
    ) -> None:
        assert_rejected(sim_http, device("dev-0001", deviceTags=value), "deviceTags")


def attributes(count: int) -> dict[str, Any]:
    return {f"attr{i}": i for i in range(count)}


class TestDeviceAttributes:
    @pytest.mark.parametrize(
        "value",
        [
            pytest.param({"serial": 111111}, id="the sample's number"),
            pytest.param({"a": 1}, id="id of 1 character"),
            pytest.param({"a" * 128: 1}, id="id of 128 characters"),
            pytest.param({"rated.power_kW-1": 1}, id="id with dot underscore dash"),
            pytest.param(attributes(200), id="200 attributes"),
            pytest.param({"note": "x" * 4000}, id="string of 4000 characters"),
            pytest.param({"points": list(range(1024))}, id="array of 1024 elements"),
            pytest.param({"location": {"lat": 1.5, "lon": 2.5}}, id="object value"),
        ],
    )
    def test_attributes_within_the_limits_are_accepted(
        self, sim_http: httpx.Client, value: dict[str, Any]
    ) -> None:
        assert_accepted(sim_http, device("dev-0001", deviceAttributes=value))

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param({"": 1}, id="empty id"),
            pytest.param({"a" * 129: 1}, id="id of 129 characters"),
            pytest.param({"rated/power": 1}, id="id with a slash"),
            pytest.param(attributes(201), id="201 attributes"),
            pytest.param({"note": "x" * 4001}, id="string of 4001 characters"),
            pytest.param({"points": list(range(1025))}, id="array of 1025 elements"),
        ],
    )
    def test_attributes_beyond_the_limits_are_rejected(
        self, sim_http: httpx.Client, value: dict[str, Any]
    ) -> None:
        assert_rejected(sim_http, device("dev-0001", deviceAttributes=value), "deviceAttributes")


class TestItemResults:
    def test_items_answer_in_request_order_with_success_and_total_sizes(
        self, sim_http: httpx.Client
    ) -> None:
        options = [
            device("order-0001"),
            device("bad"),  # 3 characters
            device("order-0003", product="pk-turbine"),
            device("order-0004", timezone="+8:00"),
            device("order-0005", product="pk-inverter"),
        ]
        answer = batch_create(sim_http, options).json()

        assert answer["code"] == 0
        assert answer["totalSize"] == 5
        assert answer["successSize"] == 3
        codes = [item["code"] for item in answer["data"]]
        assert codes[0] == codes[2] == codes[4] == 0
        assert codes[1] != 0 and codes[3] != 0
        created = [answer["data"][i]["data"] for i in (0, 2, 4)]
        assert [(d["deviceKey"], d["productKey"]) for d in created] == [
            ("order-0001", "pk-meter"),
            ("order-0003", "pk-turbine"),
            ("order-0005", "pk-inverter"),
        ]
        assert len({d["assetId"] for d in created}) == 3
        assert device_keys(sim_http) == {"order-0001", "order-0003", "order-0005"}

    def test_one_batch_may_target_several_products(self, sim_http: httpx.Client) -> None:
        answer = batch_create(
            sim_http,
            [
                device("multi-0001", product="yourProductKey"),
                device("multi-0002", product="yourProductKey2"),
            ],
        ).json()
        assert [item["data"]["productKey"] for item in answer["data"]] == [
            "yourProductKey",
            "yourProductKey2",
        ]
        assert answer["successSize"] == answer["totalSize"] == 2
