"""Test helpers for the EnOS boundary: device definitions, a fake clock and a scripted fake EnOS.

``FakeEnos`` is an ``httpx.MockTransport`` handler that plays EnOS's token service and the API
gateway with answers a test scripts. It checks what every call carries, independently of
``worker.enos.signing`` (the documented formulas are recomputed here with hashlib), and fails
the test on the spot if a call is unsigned, wrongly signed, or carries an expired token.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.enos.client import EnosClient
from worker.enos.models import CreateOption

APP_KEY = "5acb82e7-a11e-4300-9164-c8b20b638e8b"
APP_SECRET = "0f1e2d3c-4b5a-4697-8877-665544332211"
BASE_URL = "https://enos.example"
TOKEN_SERVICE = "/apim-token-service/v2.0/token/"

Answer = httpx.Response | Exception | Callable[[httpx.Request], httpx.Response]


def option(device_key: str | None, product_key: str = "pk-meter", name: str = "") -> CreateOption:
    """A valid CreateOption; ``device_key=None`` lets EnOS generate the key."""
    device: CreateOption = {
        "productKey": product_key,
        "deviceName": {"defaultValue": name or f"Device {device_key}"},
        "timezone": "+08:00",
    }
    if device_key is not None:
        device["deviceKey"] = device_key
    return device


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def envelope(code: int = 0, msg: str = "OK", data: Any = None, **extra: Any) -> httpx.Response:
    return httpx.Response(
        200, json={"code": code, "msg": msg, "requestId": "req-1", "data": data, **extra}
    )


def created(device: Mapping[str, Any], asset_id: str) -> dict[str, Any]:
    """A successful EnosBatchEachData item for ``device``."""
    data = {"assetId": asset_id, "productKey": device["productKey"]}
    data["deviceKey"] = device.get("deviceKey") or f"gen-{asset_id}"
    return {"code": 0, "msg": "OK", "data": data}


def device_list(request: httpx.Request) -> list[dict[str, Any]]:
    devices = json.loads(request.content)["deviceList"]
    assert isinstance(devices, list)
    return devices


class FakeClock:
    """A clock the test moves by hand (seconds since the epoch, like ``time.time``)."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeEnos:
    """Token service plus scripted API answers; the last scripted answer repeats."""

    clock: Callable[[], float] = time.time
    app_key: str = APP_KEY
    app_secret: str = APP_SECRET
    expire: int = 7200
    answers: list[Answer] = field(default_factory=list)
    token_answers: list[httpx.Response] = field(default_factory=list)
    token_requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    api_requests: list[httpx.Request] = field(default_factory=list)
    issued: dict[str, float] = field(default_factory=dict)
    _seen_encryptions: set[str] = field(default_factory=set)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith(TOKEN_SERVICE):
            return self._token(request)
        self.api_requests.append(request)
        self._check_call(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)

    def client(self, **kwargs: Any) -> EnosClient:
        kwargs.setdefault("clock", self.clock)
        return EnosClient(
            BASE_URL, self.app_key, self.app_secret, transport=httpx.MockTransport(self), **kwargs
        )

    @property
    def token_paths(self) -> list[str]:
        return [path.rsplit("/", 1)[1] for path, _ in self.token_requests]

    def _token(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.token_requests.append((request.url.path, body))
        # The documented rule, recomputed here: sha256_hex(appKey + timestamp + appSecret).
        assert body["appKey"] == self.app_key
        assert isinstance(body["timestamp"], int)
        expected = sha256_hex(f"{self.app_key}{body['timestamp']}{self.app_secret}")
        assert body["encryption"] == expected, "token request with a wrong encryption"
        # Like EnOS, refuse a repeated encryption (the same timestamp twice).
        if body["encryption"] in self._seen_encryptions:
            return token_answer(1001, "repeated request")
        self._seen_encryptions.add(body["encryption"])
        if self.token_answers:
            return self.token_answers.pop(0)
        if request.url.path.endswith("/refresh"):
            token = body["accessToken"]
            assert self.issued.get(token, 0) > self.clock(), "refresh of an unknown/expired token"
        else:
            token = f"token-{len(self.token_requests)}"
        self.issued[token] = self.clock() + self.expire
        return token_answer(0, "SUCCESS", {"accessToken": token, "expire": self.expire})

    def _check_call(self, request: httpx.Request) -> None:
        token = request.headers.get("apim-accesstoken")
        signature = request.headers.get("apim-signature")
        timestamp = request.headers.get("apim-timestamp")
        assert token and signature and timestamp, "an API call without the apim-* headers"
        assert token in self.issued, f"an API call with a token never issued: {token}"
        assert self.clock() < self.issued[token], "an API call with an expired token"
        params = "".join(f"{k}{v}" for k, v in sorted(request.url.params.multi_items()))
        sign_data = (
            f"{token}{params}".encode() + request.content + f"{timestamp}{self.app_secret}".encode()
        )
        assert signature == hashlib.sha256(sign_data).hexdigest(), "wrong apim-signature"


def token_answer(status: int, msg: str, data: Any = None, key: str = "status") -> httpx.Response:
    return httpx.Response(
        200, json={key: status, "msg": msg, "business": "apim-token-service", "data": data}
    )
