"""The APIM token service (``docs/enos-api.md`` §5.2, codes from §5.3).

The expected ``encryption`` is computed here with hashlib from the documented formula:
``lowercase(hex(SHA-256(appKey + timestamp + appSecret)))``, timestamp in milliseconds.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

import httpx
import pytest

from tests.simulator.helpers import APP_KEY, APP_SECRET, TOKEN_GET, TOKEN_REFRESH


def body(
    app_key: str = APP_KEY, app_secret: str = APP_SECRET, timestamp: int | None = None
) -> dict[str, Any]:
    ts = int(time.time() * 1000) if timestamp is None else timestamp
    encryption = hashlib.sha256(f"{app_key}{ts}{app_secret}".encode()).hexdigest()
    return {"appKey": app_key, "encryption": encryption, "timestamp": ts}


def ask(http: httpx.Client, path: str, payload: Any) -> dict[str, Any]:
    response = http.post(path, json=payload)
    assert response.status_code == 200
    answer: dict[str, Any] = response.json()
    assert answer["business"] == "apim-token-service"
    return answer


def test_a_valid_request_gets_a_token_for_7200_seconds(sim_http: httpx.Client) -> None:
    answer = ask(sim_http, TOKEN_GET, body())
    assert answer["status"] == 0
    assert answer["msg"] == "SUCCESS"
    assert set(answer["data"]) == {"accessToken", "expire"}
    assert isinstance(answer["data"]["accessToken"], str) and answer["data"]["accessToken"]
    assert answer["data"]["expire"] == 7200


def test_the_documented_encryption_is_lowercase_hex_sha256() -> None:
    # A fixed vector, so that the formula in this module is itself checked.
    digest = body("ak-1", "sk-1", 1572574909697)["encryption"]
    assert digest == hashlib.sha256(b"ak-11572574909697sk-1").hexdigest()
    assert digest == digest.lower() and len(digest) == 64


def test_asking_again_returns_the_same_unexpired_token(sim_http: httpx.Client) -> None:
    first = ask(sim_http, TOKEN_GET, body(timestamp=int(time.time() * 1000)))
    second = ask(sim_http, TOKEN_GET, body(timestamp=int(time.time() * 1000) + 1))
    assert second["status"] == 0
    assert second["data"]["accessToken"] == first["data"]["accessToken"]
    assert 0 < second["data"]["expire"] <= 7200


def test_another_account_gets_another_token(sim_http: httpx.Client) -> None:
    other_key, other_secret = (
        "5acb82e7-a11e-4300-9164-c8b20b638e8b",
        "1b2c3d4e-5f60-4718-8293-a4b5c6d7e8f9",
    )
    registered = sim_http.post(
        "/__sim/accounts", json={"appKey": other_key, "appSecret": other_secret, "orgs": []}
    )
    assert registered.status_code == 200
    mine = ask(sim_http, TOKEN_GET, body())["data"]["accessToken"]
    theirs = ask(sim_http, TOKEN_GET, body(other_key, other_secret))["data"]["accessToken"]
    assert mine != theirs


def test_an_unknown_app_key_is_1002(sim_http: httpx.Client) -> None:
    answer = ask(sim_http, TOKEN_GET, body(app_key="00000000-dead-beef-0000-000000000000"))
    assert answer["status"] == 1002
    assert not answer.get("data")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(body(app_secret="wrong-secret"), id="wrong secret"),
        pytest.param({**body(), "encryption": body()["encryption"].upper()}, id="uppercase hex"),
        pytest.param({**body(), "timestamp": body()["timestamp"] + 1}, id="other timestamp"),
        pytest.param(
            {**body(), "encryption": hashlib.sha1(b"x").hexdigest()}, id="not the formula"
        ),
    ],
)
def test_an_encryption_that_is_not_the_formula_is_1003(
    sim_http: httpx.Client, payload: dict[str, Any]
) -> None:
    answer = ask(sim_http, TOKEN_GET, payload)
    assert answer["status"] == 1003
    assert not answer.get("data")


@pytest.mark.parametrize("missing", ["appKey", "encryption", "timestamp"])
def test_a_missing_parameter_is_1202(sim_http: httpx.Client, missing: str) -> None:
    payload = body()
    del payload[missing]
    answer = ask(sim_http, TOKEN_GET, payload)
    assert answer["status"] == 1202
    assert not answer.get("data")


def test_an_empty_parameter_is_1202(sim_http: httpx.Client) -> None:
    assert ask(sim_http, TOKEN_GET, {**body(), "appKey": ""})["status"] == 1202


def test_a_repeated_encryption_is_1001(sim_http: httpx.Client) -> None:
    payload = body()
    assert ask(sim_http, TOKEN_GET, payload)["status"] == 0
    answer = ask(sim_http, TOKEN_GET, payload)
    assert answer["status"] == 1001
    assert not answer.get("data")


def later() -> int:
    """A timestamp of its own, so that the encryption is not a repeat of the previous request's."""
    return int(time.time() * 1000) + 7


def test_refresh_renews_the_live_token(sim_http: httpx.Client) -> None:
    token = ask(sim_http, TOKEN_GET, body())["data"]["accessToken"]
    answer = ask(sim_http, TOKEN_REFRESH, {**body(timestamp=later()), "accessToken": token})
    assert answer["status"] == 0
    assert answer["msg"] == "SUCCESS"
    assert answer["data"] == {"accessToken": token, "expire": 7200}
    again = ask(sim_http, TOKEN_GET, body(timestamp=later() + 1))
    assert again["data"]["accessToken"] == token


def test_refresh_of_a_token_never_issued_fails(sim_http: httpx.Client) -> None:
    answer = ask(sim_http, TOKEN_REFRESH, {**body(), "accessToken": "not-a-token"})
    assert answer["status"] == 1204
    assert not answer.get("data")


def test_refresh_checks_the_encryption_like_get(sim_http: httpx.Client) -> None:
    token = ask(sim_http, TOKEN_GET, body())["data"]["accessToken"]
    wrong = body(app_secret="wrong", timestamp=later())
    answer = ask(sim_http, TOKEN_REFRESH, {**wrong, "accessToken": token})
    assert answer["status"] == 1003


def test_a_body_that_is_not_a_json_object_is_refused(sim_http: httpx.Client) -> None:
    response = sim_http.post(TOKEN_GET, content=b"appKey=x&timestamp=1")
    assert response.status_code == 200
    assert response.json()["status"] not in (0, None)
