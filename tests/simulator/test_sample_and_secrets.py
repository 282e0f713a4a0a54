"""The V2.4 page's own sample request, and what ``requireSecret`` returns on each API version.

The sample is copied byte for byte from the V2.4 Batch Create Devices page
([BC24] in ``docs/enos-api.md``), trailing comma included: a user who pastes it
must get a clear error, and the same body without that comma (``examples/batch-create-sample.json``)
must work. Secrets: ``docs/enos-api.md`` §2.3 and §6.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import orjson
import pytest

from tests.simulator.helpers import (
    APP_KEY,
    DEVICES,
    SDK_HEADERS,
    batch_create,
    device,
    get_action,
    get_token,
    post_action,
    sim_devices,
    token_headers,
)
from worker.enos.secret_box import Opener, generate_private_key_pem
from worker.simulator.state import Store

PAGE_SAMPLE_REQUEST = """\
{
  "deviceList":
  [
    {
      "productKey": "yourProductKey",
      "deviceName":
      {
        "defaultValue": "Device Name",
        "i18nValue":
        {
            "zh_CN": "设备名称",
            "en_US": "Device Name"
        }
      },
      "timezone": "+08:00",
      "deviceAttributes":
      {
        "serial": 111111
      },
      "deviceDesc": "Device description",
      "deviceTags":
      {
        "tag1": "tag value"
      }
    },
    {
      "productKey": "yourProductKey2",
      "deviceName":
      {
        "defaultValue": "Device Name 2",
        "i18nValue":
        {
            "zh_CN": "设备名称 2",
            "en_US": "Device Name 2"
        }
      },
      "timezone": "+08:00",
      "deviceAttributes":
      {
        "serial": 222222
      },
      "deviceDesc": "Device description 2",
      "deviceTags":
      {
        "tag2": "tag value"
      }
    },
  ],
  "requireSecret": true
}
"""

EXAMPLE_FILE = Path(__file__).resolve().parents[2] / "examples" / "batch-create-sample.json"


def fixed_sample() -> bytes:
    return EXAMPLE_FILE.read_bytes()


def demo_opener(store: Store) -> Opener:
    pem = store.accounts[APP_KEY].private_pem
    assert pem is not None
    return Opener(pem)


def stored_secrets(http: httpx.Client) -> dict[str, str]:
    return {d["assetId"]: d["deviceSecret"] for d in sim_devices(http)}


def test_the_example_file_is_the_page_sample_without_its_trailing_comma() -> None:
    fixed = fixed_sample().decode().strip()
    assert fixed != PAGE_SAMPLE_REQUEST.strip()
    assert fixed == PAGE_SAMPLE_REQUEST.strip().replace("    },\n  ],", "    }\n  ],")


class TestPageSample:
    def test_the_sample_with_its_trailing_comma_gets_a_clear_400_naming_the_problem(
        self, sim_http: httpx.Client
    ) -> None:
        response = post_action(
            sim_http, DEVICES, "batchCreate", PAGE_SAMPLE_REQUEST.encode(), headers=SDK_HEADERS
        )
        assert response.status_code == 400
        answer = response.json()
        assert answer["code"] == 99400
        assert "JSON" in answer["msg"]
        assert "trailing comma" in answer["msg"]
        assert "line 47" in answer["msg"]
        assert sim_devices(sim_http) == []

    @pytest.mark.parametrize("caller", ["demo token", "sdk"])
    def test_the_sample_without_the_comma_creates_two_devices_with_sealed_secrets(
        self, sim_http: httpx.Client, sim_store: Store, caller: str
    ) -> None:
        headers = token_headers(get_token(sim_http)) if caller == "demo token" else SDK_HEADERS
        response = post_action(sim_http, DEVICES, "batchCreate", fixed_sample(), headers=headers)

        assert response.status_code == 200
        answer = response.json()
        assert (answer["code"], answer["msg"]) == (0, "OK")
        assert answer["requestId"]
        assert (answer["successSize"], answer["totalSize"]) == (2, 2)
        items = answer["data"]
        assert [(i["code"], i["msg"]) for i in items] == [(0, "OK"), (0, "OK")]
        assert [i["data"]["productKey"] for i in items] == ["yourProductKey", "yourProductKey2"]
        asset_ids = [i["data"]["assetId"] for i in items]
        assert all(asset_ids) and len(set(asset_ids)) == 2

        opener = demo_opener(sim_store)
        secrets = stored_secrets(sim_http)
        for item in items:
            data = item["data"]
            assert data["deviceKey"]
            clear = secrets[data["assetId"]]
            assert data["deviceSecret"] != clear
            assert clear not in data["deviceSecret"]
            assert opener.open(data["deviceSecret"], data["sessionKey"]) == clear

    def test_a_secret_sealed_for_the_demo_key_does_not_open_with_another_key(
        self, sim_http: httpx.Client
    ) -> None:
        answer = post_action(sim_http, DEVICES, "batchCreate", fixed_sample()).json()
        data = answer["data"][0]["data"]
        stranger = Opener(generate_private_key_pem())
        with pytest.raises(ValueError):
            stranger.open(data["deviceSecret"], data["sessionKey"])


class TestSecretsByVersion:
    def test_v24_without_require_secret_returns_no_secret(self, sim_http: httpx.Client) -> None:
        answer = batch_create(sim_http, [device("nosec-001")]).json()
        data = answer["data"][0]["data"]
        assert "deviceSecret" not in data
        assert "sessionKey" not in data

    @pytest.mark.parametrize("version", ["v2.0", "v2.1"])
    def test_older_batch_create_paths_return_a_plaintext_secret_and_no_session_key(
        self, sim_http: httpx.Client, version: str
    ) -> None:
        answer = batch_create(sim_http, [device("old-00001"), device(None)], version=version).json()
        assert answer["code"] == 0
        assert answer["successSize"] == 2
        secrets = stored_secrets(sim_http)
        for item in answer["data"]:
            data = item["data"]
            assert "sessionKey" not in data
            assert data["deviceSecret"] == secrets[data["assetId"]]

    def test_create_device_v24_with_require_secret_seals_the_secret(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        body = orjson.dumps({**device("single-001"), "requireSecret": True})
        answer = post_action(sim_http, DEVICES, "create", body).json()
        assert answer["code"] == 0
        data = answer["data"]
        assert data["deviceKey"] == "single-001"
        clear = stored_secrets(sim_http)[data["assetId"]]
        assert demo_opener(sim_store).open(data["deviceSecret"], data["sessionKey"]) == clear

    def test_get_device_v24_with_require_secret_seals_the_stored_secret(
        self, sim_http: httpx.Client, sim_store: Store
    ) -> None:
        created = batch_create(sim_http, [device("getsec-01")]).json()["data"][0]["data"]
        answer = get_action(
            sim_http, DEVICES, "get", assetId=created["assetId"], requireSecret="true"
        ).json()
        assert answer["code"] == 0
        data = answer["data"]
        clear = stored_secrets(sim_http)[created["assetId"]]
        assert demo_opener(sim_store).open(data["deviceSecret"], data["sessionKey"]) == clear
