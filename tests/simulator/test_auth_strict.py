"""Signed calls in ``--auth strict`` (``docs/enos-api.md`` §5.3).

``apim-signature = lowercase(hex(SHA-256(accessToken + sorted query as key1value1… + raw body +
timestamp + appSecret)))``, with the headers ``apim-accesstoken``, ``apim-signature`` and
``apim-timestamp``. A refused call is the gateway's HTTP 401.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import orjson
import pytest

from tests.simulator.helpers import (
    APP_SECRET,
    DEVICES,
    ORG,
    SDK_HEADERS,
    device,
    device_keys,
    get_token,
    signature,
    signed_headers,
    token_headers,
)
from worker.enos.client import EnosClient
from worker.enos.models import CreateOption
from worker.simulator.api import SimConfig


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(auth="strict")


BATCH_QUERY = {"action": "batchCreate", "orgId": ORG}


def batch_body(*keys: str) -> bytes:
    return orjson.dumps({"deviceList": [device(key) for key in keys]})


def send(
    http: httpx.Client, headers: dict[str, str], body: bytes, query: dict[str, str] | None = None
) -> httpx.Response:
    return http.post(DEVICES, params=query or BATCH_QUERY, content=body, headers=headers)


def assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert "Invalid authentication credentials" in response.json()["message"]


def test_the_signature_formula_reproduces_the_documented_example() -> None:
    # The worked example of the token invocation page (Chinese body, 2-space indent).
    body = '{\n  "count": 20,\n  "page": 1,\n  "desc": "描述"\n}'.encode()
    query = {"k3": "v3", "k1": "v1", "k2": "v2"}
    assert (
        signature("xxxxaaaxxxx", query, body, 1572574909697, "xxxappSecretxxx")
        == "59828328f6c1f9771015dc74e4929ae30f518a35a3d2353972c2ea46556fc981"
    )


class TestSignedCalls:
    def test_a_correctly_signed_batch_create_is_accepted(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = batch_body("sig-00001")
        response = send(sim_http, signed_headers(token, BATCH_QUERY, body), body)
        assert response.status_code == 200
        answer = response.json()
        assert answer["code"] == 0 and answer["successSize"] == 1
        assert device_keys(sim_http) == {"sig-00001"}

    def test_a_signed_get_without_a_body_is_accepted(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = batch_body("sig-00002")
        created = send(sim_http, signed_headers(token, BATCH_QUERY, body), body).json()
        query = {
            "action": "get",
            "orgId": ORG,
            "productKey": "pk-meter",
            "deviceKey": "sig-00002",
        }
        response = sim_http.get(DEVICES, params=query, headers=signed_headers(token, query, b""))
        assert response.status_code == 200
        assert response.json()["data"]["assetId"] == created["data"][0]["data"]["assetId"]

    def test_the_query_is_signed_sorted_whatever_its_order_on_the_wire(
        self, sim_http: httpx.Client
    ) -> None:
        token = get_token(sim_http)
        body = batch_body("sig-00003")
        headers = signed_headers(token, BATCH_QUERY, body)
        url = f"{DEVICES}?orgId={ORG}&action=batchCreate"  # not in key order
        response = sim_http.post(url, content=body, headers=headers)
        assert response.status_code == 200
        assert response.json()["code"] == 0

    def test_a_signed_call_is_held_to_the_accounts_organizations(
        self, sim_http: httpx.Client
    ) -> None:
        token = get_token(sim_http)
        body = batch_body("sig-00004")
        query = {"action": "batchCreate", "orgId": "o-forbidden"}
        response = send(sim_http, signed_headers(token, query, body), body, query)
        assert response.status_code == 200
        assert response.json()["code"] == 99403


class TestRefusedCalls:
    def test_a_wrong_signature_is_401(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = batch_body("bad-00001")
        headers = {**signed_headers(token, BATCH_QUERY, body), "apim-signature": "0" * 64}
        assert_refused(send(sim_http, headers, body))
        assert device_keys(sim_http) == set()

    def test_a_signature_made_with_another_secret_is_401(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = batch_body("bad-00002")
        assert_refused(send(sim_http, signed_headers(token, BATCH_QUERY, body, "not-it"), body))

    def test_a_body_changed_after_signing_is_401(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        headers = signed_headers(token, BATCH_QUERY, batch_body("bad-00003"))
        assert_refused(send(sim_http, headers, batch_body("bad-99999")))
        assert device_keys(sim_http) == set()

    def test_a_query_changed_after_signing_is_401(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = batch_body("bad-00004")
        headers = signed_headers(token, BATCH_QUERY, body)
        assert_refused(send(sim_http, headers, body, {**BATCH_QUERY, "orgId": "o-forbidden"}))

    def test_a_missing_signature_is_401(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = batch_body("bad-00005")
        headers = signed_headers(token, BATCH_QUERY, body)
        del headers["apim-signature"]
        assert_refused(send(sim_http, headers, body))

    def test_a_missing_timestamp_is_401(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = batch_body("bad-00006")
        headers = signed_headers(token, BATCH_QUERY, body)
        del headers["apim-timestamp"]
        assert_refused(send(sim_http, headers, body))

    def test_an_unknown_token_is_401_even_when_signed_with_the_right_secret(
        self, sim_http: httpx.Client
    ) -> None:
        body = batch_body("bad-00007")
        assert_refused(send(sim_http, signed_headers("f" * 32, BATCH_QUERY, body), body))

    def test_a_call_without_any_token_is_401(self, sim_http: httpx.Client) -> None:
        body = batch_body("bad-00008")
        headers = {"Content-Type": "application/json;charset=utf-8"}
        assert_refused(send(sim_http, headers, body))

    @pytest.mark.parametrize("form", ["sdk blob", "issued token"])
    def test_a_token_without_a_signature_is_401(self, sim_http: httpx.Client, form: str) -> None:
        headers = SDK_HEADERS if form == "sdk blob" else token_headers(get_token(sim_http))
        assert_refused(send(sim_http, headers, batch_body("bad-00009")))
        assert device_keys(sim_http) == set()

    def test_an_expired_token_is_401(self, sim_http: httpx.Client, sim_app: Any) -> None:
        sim_app.state.api.tokens.ttl_s = 0.05
        token = get_token(sim_http)
        time.sleep(0.1)
        body = batch_body("bad-00010")
        assert_refused(send(sim_http, signed_headers(token, BATCH_QUERY, body, APP_SECRET), body))


def test_the_project_client_works_in_strict_mode(client: EnosClient) -> None:
    option: CreateOption = {
        "productKey": "pk-meter",
        "deviceKey": "client-0001",
        "deviceName": {"defaultValue": "Client"},
        "timezone": "+08:00",
    }
    result = client.batch_create(ORG, [option])
    assert result.code == 0
    assert result.items[0].code == 0
    assert client.get_device(ORG, product_key="pk-meter", device_key="client-0001") is not None
