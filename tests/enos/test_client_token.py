"""Tokens, signed calls and TLS: what every request to EnOS carries (reference §5.2-§5.3)."""

from __future__ import annotations

import inspect
import ssl

import httpx
import pytest

from tests.enos.support import (
    APP_KEY,
    FakeClock,
    FakeEnos,
    created,
    device_list,
    envelope,
    option,
    token_answer,
)
from worker.enos import errors
from worker.enos.client import EnosClient

DEVICES = [option("meter-0001"), option("meter-0002")]


def all_created(request: httpx.Request) -> httpx.Response:
    items = [created(d, f"asset{i}") for i, d in enumerate(device_list(request))]
    return envelope(0, "OK", items, successSize=len(items), totalSize=len(items))


def test_calls_carry_the_documented_headers_and_signature() -> None:
    clock = FakeClock(1572574909.697)
    fake = FakeEnos(clock=clock, answers=[all_created])
    with fake.client() as enos:
        enos.batch_create("o-demo", DEVICES, require_secret=True)
    # FakeEnos has verified the signature with the documented formula; check the rest here.
    (request,) = fake.api_requests
    assert request.headers["apim-accesstoken"] == "token-1"
    assert request.headers["apim-timestamp"] == "1572574909697"
    assert len(request.headers["apim-signature"]) == 64
    assert request.url.path == "/connect-service/v2.4/devices"
    assert dict(request.url.params) == {"action": "batchCreate", "orgId": "o-demo"}
    assert request.headers["content-type"].startswith("application/json")
    assert b'"requireSecret":true' in request.content
    path, body = fake.token_requests[0]
    assert path == "/apim-token-service/v2.0/token/get"
    assert body["timestamp"] == 1572574909697 and body["appKey"] == APP_KEY


def test_query_only_calls_are_signed_too() -> None:
    device = {"assetId": "abc12345", "productKey": "pk-meter", "deviceKey": "meter-0001"}
    fake = FakeEnos(answers=[envelope(0, "OK", {**device, "deviceName": {"defaultValue": "M"}})])
    with fake.client() as enos:
        found = enos.get_device("o-demo", product_key="pk-meter", device_key="meter-0001")
    assert found is not None and found.asset_id == "abc12345" and found.default_name == "M"
    (request,) = fake.api_requests
    assert request.method == "GET" and request.content == b""
    assert dict(request.url.params) == {
        "action": "get",
        "orgId": "o-demo",
        "productKey": "pk-meter",
        "deviceKey": "meter-0001",
    }


def test_the_fake_rejects_a_wrong_signature() -> None:
    # The header checks above can fail: a client with another secret is caught at its token.
    fake = FakeEnos(answers=[all_created])
    with (
        EnosClient(
            "https://enos.example", APP_KEY, "wrong", transport=httpx.MockTransport(fake)
        ) as enos,
        pytest.raises(AssertionError, match="wrong encryption"),
    ):
        enos.batch_create("o-demo", DEVICES)


def test_token_is_refreshed_before_it_expires() -> None:
    clock = FakeClock()
    fake = FakeEnos(clock=clock, answers=[all_created])
    with fake.client() as enos:
        enos.batch_create("o-demo", DEVICES)
        clock.advance(6000)  # 1,200 s left: still comfortably valid
        enos.batch_create("o-demo", DEVICES)
        assert fake.token_paths == ["get"]
        clock.advance(600)  # 600 s left: refresh before it runs out
        enos.batch_create("o-demo", DEVICES)
        assert fake.token_paths == ["get", "refresh"]
        assert fake.token_requests[1][1]["accessToken"] == "token-1"
        clock.advance(7200 + 1)  # expired while idle: a new token, never the stale one
        enos.batch_create("o-demo", DEVICES)
    assert fake.token_paths == ["get", "refresh", "get"]
    assert len(fake.api_requests) == 4  # each checked against the fake's expiry


def test_short_lived_token_is_renewed_in_time() -> None:
    clock = FakeClock()
    fake = FakeEnos(clock=clock, expire=300, answers=[all_created])
    with fake.client() as enos:
        for _ in range(10):
            enos.batch_create("o-demo", DEVICES)
            clock.advance(100)
    assert fake.token_paths[0] == "get" and len(fake.token_paths) >= 4


def test_refused_refresh_falls_back_to_a_new_token_in_the_same_millisecond() -> None:
    clock = FakeClock()
    fake = FakeEnos(clock=clock, answers=[all_created])
    with fake.client() as enos:
        enos.batch_create("o-demo", DEVICES)
        clock.advance(7000)
        fake.token_answers = [token_answer(1204, "failed to refresh access token")]
        enos.batch_create("o-demo", DEVICES)  # the clock does not move between the two
    assert fake.token_paths == ["get", "refresh", "get"]
    timestamps = [body["timestamp"] for _, body in fake.token_requests]
    assert len(set(timestamps)) == 3


def test_token_fetched_again_after_a_401_within_the_same_millisecond() -> None:
    refused = httpx.Response(401, json={"message": "Invalid authentication credentials"})
    fake = FakeEnos(clock=FakeClock(), answers=[refused, all_created])
    with fake.client() as enos:
        assert all(item.ok for item in enos.batch_create("o-demo", DEVICES).items)
    assert fake.token_paths == ["get", "get"]


def test_repeated_request_refusal_of_the_token_service_is_tried_again() -> None:
    # Another process with the same AccessKey asked in the same millisecond: 1001 once.
    fake = FakeEnos(clock=FakeClock(), answers=[all_created])
    fake.token_answers = [token_answer(1001, "repeated request")]
    with fake.client() as enos:
        enos.batch_create("o-demo", DEVICES)
    assert fake.token_paths == ["get", "get"]


def test_token_lost_in_transit_is_transient() -> None:
    fake = FakeEnos(answers=[all_created])

    def lose(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token/get"):
            raise httpx.ReadTimeout("timed out", request=request)
        return fake(request)

    with (
        EnosClient(
            "https://enos.example", APP_KEY, "x", transport=httpx.MockTransport(lose)
        ) as enos,
        pytest.raises(errors.TransientError) as caught,
    ):
        enos.batch_create("o-demo", DEVICES)
    # Asking for a token creates nothing, so a lost token answer is not ambiguous.
    assert not isinstance(caught.value, errors.AmbiguousError)


def test_tls_verification_is_on_by_default() -> None:
    assert inspect.signature(EnosClient).parameters["verify"].default is True
    with EnosClient("https://enos.example", APP_KEY, "secret") as enos:
        context = enos._http._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname is True
    with EnosClient("https://enos.example", APP_KEY, "secret", verify=False) as insecure:
        context = insecure._http._transport._pool._ssl_context  # type: ignore[attr-defined]
        assert context.verify_mode == ssl.CERT_NONE


def test_timeouts_are_explicit() -> None:
    with EnosClient(
        "https://enos.example", APP_KEY, "secret", connect_timeout=2, read_timeout=7
    ) as enos:
        timeout = enos._http.timeout
    assert (timeout.connect, timeout.read, timeout.write) == (2, 7, 7)


def test_the_secret_never_shows() -> None:
    with EnosClient("https://enos.example", APP_KEY, "very-secret-value") as enos:
        assert "very-secret-value" not in repr(vars(enos))
