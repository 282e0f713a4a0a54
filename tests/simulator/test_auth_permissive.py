"""Permissive auth (the default) and the official EnOS SDK, ``enos-poseidon``.

The SDK sends a single ``apim-accesstoken`` blob the simulator cannot open, with
``Content-Type: application/json;charset=utf-8`` (``docs/enos-api.md`` §5.4); permissive mode
accepts that, and still verifies any call that does carry a signature.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from poseidon import poseidon

from tests.simulator.helpers import (
    APP_KEY,
    APP_SECRET,
    DEVICES,
    ORG,
    SDK_HEADERS,
    device,
    device_keys,
    get_token,
    signed_headers,
    sim_devices,
)

BATCH_QUERY = {"action": "batchCreate", "orgId": ORG}


class TestPermissiveMode:
    def test_a_call_with_only_the_sdk_token_header_is_accepted(
        self, sim_http: httpx.Client
    ) -> None:
        assert set(SDK_HEADERS) == {"apim-accesstoken", "Content-Type"}
        assert SDK_HEADERS["Content-Type"] == "application/json;charset=utf-8"
        body = orjson.dumps({"deviceList": [device("perm-0001")]})
        response = sim_http.post(DEVICES, params=BATCH_QUERY, content=body, headers=SDK_HEADERS)
        assert response.status_code == 200
        assert response.json()["successSize"] == 1
        assert device_keys(sim_http) == {"perm-0001"}

    def test_a_call_without_a_token_is_401(self, sim_http: httpx.Client) -> None:
        body = orjson.dumps({"deviceList": [device("perm-0002")]})
        response = sim_http.post(
            DEVICES,
            params=BATCH_QUERY,
            content=body,
            headers={"Content-Type": "application/json;charset=utf-8"},
        )
        assert response.status_code == 401
        assert device_keys(sim_http) == set()

    def test_a_signed_call_is_still_verified(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = orjson.dumps({"deviceList": [device("perm-0003")]})
        headers = {**signed_headers(token, BATCH_QUERY, body), "apim-signature": "1" * 64}
        response = sim_http.post(DEVICES, params=BATCH_QUERY, content=body, headers=headers)
        assert response.status_code == 401
        assert device_keys(sim_http) == set()

    def test_a_correctly_signed_call_is_accepted(self, sim_http: httpx.Client) -> None:
        token = get_token(sim_http)
        body = orjson.dumps({"deviceList": [device("perm-0004")]})
        headers = signed_headers(token, BATCH_QUERY, body, APP_SECRET)
        response = sim_http.post(DEVICES, params=BATCH_QUERY, content=body, headers=headers)
        assert response.status_code == 200
        assert response.json()["code"] == 0


@pytest.fixture
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Any]]:
    """Refuses (and records) every name lookup or connection that would leave this machine."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def address(host: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
        try:
            return ipaddress.ip_address(host if isinstance(host, str) else host.decode())
        except ValueError:
            return None

    def is_loopback(host: Any) -> bool:
        ip = address(host)
        return ip.is_loopback if ip is not None else host in ("localhost", b"localhost")

    def connect(self: socket.socket, target: Any) -> None:
        if isinstance(target, tuple) and not is_loopback(target[0]):
            attempts.append(target)
            raise OSError("the network is off limits in this test")
        real_connect(self, target)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        # An address literal needs no lookup (connect() guards it); any name but localhost would.
        if host is not None and address(host) is None and not is_loopback(host):
            attempts.append(host)
            raise socket.gaierror(socket.EAI_NONAME, "the network is off limits in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for scheme in ("http", "https", "all"):  # urllib would send loopback calls to a proxy
        monkeypatch.delenv(f"{scheme}_proxy", raising=False)
        monkeypatch.delenv(f"{scheme.upper()}_PROXY", raising=False)
    yield attempts
    assert attempts == [], f"the SDK tried to reach {attempts}"


def sdk(url: str, data: dict[str, Any] | None = None) -> Any:
    return poseidon.urlopen(APP_KEY, APP_SECRET, url, data=data)


class TestOfficialSdk:
    def test_the_guard_does_refuse_the_network(self, loopback_only: list[Any]) -> None:
        with pytest.raises(OSError):
            socket.create_connection(("198.51.100.7", 80), timeout=1)
        with pytest.raises(OSError):
            socket.create_connection(("support.enos-iot.com", 443), timeout=1)
        assert loopback_only == [("198.51.100.7", 80), "support.enos-iot.com"]
        loopback_only.clear()

    def test_the_sdk_creates_devices_in_permissive_mode(
        self, sim_server: str, loopback_only: list[Any]
    ) -> None:
        url = f"{sim_server}{DEVICES}?action=batchCreate&orgId={ORG}"
        answer = sdk(url, {"deviceList": [device("sdk-00001"), device("sdk-00002")]})

        assert isinstance(answer, dict), answer
        assert answer["code"] == 0
        assert (answer["successSize"], answer["totalSize"]) == (2, 2)
        assert [item["data"]["deviceKey"] for item in answer["data"]] == ["sdk-00001", "sdk-00002"]
        with httpx.Client(base_url=sim_server) as http:
            assert {d["deviceKey"] for d in sim_devices(http)} == {"sdk-00001", "sdk-00002"}

    def test_the_sdk_gets_and_searches_devices(
        self, sim_server: str, loopback_only: list[Any]
    ) -> None:
        created = sdk(
            f"{sim_server}{DEVICES}?action=batchCreate&orgId={ORG}",
            {"deviceList": [device("sdk-00003")]},
        )
        asset_id = created["data"][0]["data"]["assetId"]

        got = sdk(f"{sim_server}{DEVICES}?action=get&orgId={ORG}&assetId={asset_id}")
        assert got["code"] == 0
        assert got["data"]["deviceKey"] == "sdk-00003"

        found = sdk(
            f"{sim_server}{DEVICES}?action=search&orgId={ORG}",
            {
                "expression": "deviceKey in ('sdk-00003')",
                "pagination": {"pageNo": 1, "pageSize": 10},
            },
        )
        assert [d["assetId"] for d in found["data"]] == [asset_id]

    def test_the_sdk_sees_business_errors_in_the_body(
        self, sim_server: str, loopback_only: list[Any]
    ) -> None:
        url = f"{sim_server}{DEVICES}?action=batchCreate&orgId={ORG}"
        sdk(url, {"deviceList": [device("sdk-00004")]})
        answer = sdk(url, {"deviceList": [device("sdk-00004")]})
        assert answer["code"] == 0
        assert answer["data"][0]["code"] == 11702
