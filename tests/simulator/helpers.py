"""Wire-level helpers for the simulator tests.

The signing and token formulas are written out here from ``docs/enos-api.md`` §5 on purpose,
instead of importing ``worker.enos.signing``: the simulator must agree with the documentation,
not with the code it shares with the client.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import orjson

from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG

ORG = DEMO_ORG
APP_KEY = DEMO_APP_KEY
APP_SECRET = DEMO_APP_SECRET
DEVICES = "/connect-service/v2.4/devices"
PRODUCTS = "/connect-service/v2.4/products"
TOKEN_GET = "/apim-token-service/v2.0/token/get"
TOKEN_REFRESH = "/apim-token-service/v2.0/token/refresh"

# What the official SDK (enos-poseidon) sends: an opaque token blob and this content type.
SDK_HEADERS = {
    "apim-accesstoken": "an-opaque-poseidon-blob",
    "Content-Type": "application/json;charset=utf-8",
}


def sha256_hex(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def now_ms() -> int:
    return int(time.time() * 1000)


def token_request(app_key: str, app_secret: str, timestamp: int | None = None) -> dict[str, Any]:
    """A token/get body: ``encryption = sha256_hex(appKey + timestamp + appSecret)`` (§5.2)."""
    ts = now_ms() if timestamp is None else timestamp
    return {
        "appKey": app_key,
        "encryption": sha256_hex(f"{app_key}{ts}{app_secret}"),
        "timestamp": ts,
    }


def get_token(http: httpx.Client, app_key: str = APP_KEY, app_secret: str = APP_SECRET) -> str:
    answer = http.post(TOKEN_GET, json=token_request(app_key, app_secret)).json()
    assert answer["status"] == 0, answer
    token: str = answer["data"]["accessToken"]
    return token


def signature(
    token: str, query: dict[str, str], body: bytes, timestamp: int | str, app_secret: str
) -> str:
    """``apim-signature`` (§5.3): token + sorted ``key1value1…`` + raw body + timestamp + secret."""
    params = "".join(f"{key}{query[key]}" for key in sorted(query))
    return sha256_hex(token.encode() + params.encode() + body + f"{timestamp}{app_secret}".encode())


def signed_headers(
    token: str, query: dict[str, str], body: bytes, app_secret: str = APP_SECRET
) -> dict[str, str]:
    timestamp = now_ms()
    return {
        "apim-accesstoken": token,
        "apim-signature": signature(token, query, body, timestamp, app_secret),
        "apim-timestamp": str(timestamp),
        "Content-Type": "application/json;charset=UTF-8",
    }


def token_headers(token: str) -> dict[str, str]:
    """A call carrying only an issued token, as permissive mode allows."""
    return {"apim-accesstoken": token, "Content-Type": "application/json;charset=utf-8"}


def device(key: str | None = None, product: str = "pk-meter", **fields: Any) -> dict[str, Any]:
    """A valid CreateOption; ``fields`` replace or add members (``None`` removes one)."""
    option: dict[str, Any] = {
        "productKey": product,
        "deviceName": {"defaultValue": f"Device {key or 'anon'}"},
        "timezone": "+08:00",
    }
    if key is not None:
        option["deviceKey"] = key
    for name, value in fields.items():
        if value is None:
            option.pop(name, None)
        else:
            option[name] = value
    return option


def batch_create(
    http: httpx.Client,
    devices: list[dict[str, Any]],
    *,
    org: str | None = ORG,
    version: str = "v2.4",
    headers: dict[str, str] | None = None,
    require_secret: bool | None = None,
    timeout: httpx.Timeout | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"deviceList": devices}
    if require_secret is not None:
        body["requireSecret"] = require_secret
    return post_action(
        http,
        f"/connect-service/{version}/devices",
        "batchCreate",
        orjson.dumps(body),
        org=org,
        headers=headers,
        timeout=timeout,
    )


def post_action(
    http: httpx.Client,
    path: str,
    action: str,
    content: bytes = b"",
    *,
    org: str | None = ORG,
    headers: dict[str, str] | None = None,
    timeout: httpx.Timeout | None = None,
    **params: str,
) -> httpx.Response:
    query = {"action": action, **params}
    if org is not None:
        query["orgId"] = org
    extra: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
    return http.post(
        path, params=query, content=content or None, headers=headers or SDK_HEADERS, **extra
    )


def get_action(
    http: httpx.Client,
    path: str,
    action: str,
    *,
    org: str = ORG,
    headers: dict[str, str] | None = None,
    **params: str,
) -> httpx.Response:
    return http.get(
        path, params={"action": action, "orgId": org, **params}, headers=headers or SDK_HEADERS
    )


def search(
    http: httpx.Client,
    expression: str | None = None,
    *,
    page_no: int | None = None,
    page_size: int | None = None,
    org: str = ORG,
    path: str = DEVICES,
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if expression is not None:
        body["expression"] = expression
    if page_no is not None or page_size is not None:
        body["pagination"] = {
            k: v for k, v in (("pageNo", page_no), ("pageSize", page_size)) if v is not None
        }
    answer: dict[str, Any] = post_action(http, path, "search", orjson.dumps(body), org=org).json()
    return answer


def sim_devices(http: httpx.Client) -> list[dict[str, Any]]:
    """Every device the simulator holds, from ``GET /__sim/devices`` (NDJSON)."""
    response = http.get("/__sim/devices")
    assert response.status_code == 200
    return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]


def device_keys(http: httpx.Client) -> set[str]:
    return {d["deviceKey"] for d in sim_devices(http)}
