"""Every answer form that docs/enos-api.md documents or infers (§2.5, §7), from a fake EnOS.

Each answer must become the class of the answer table in docs/architecture.md.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.enos.support import (
    APP_KEY,
    APP_SECRET,
    FakeEnos,
    created,
    device_list,
    envelope,
    option,
    token_answer,
)
from worker.enos import errors
from worker.enos.client import EnosClient
from worker.enos.models import ItemKind

DEVICES = [option("meter-0001"), option("meter-0002"), option("meter-0003")]


def batch_answer(
    code: int, msg: str, failed: dict[int, dict[str, Any]]
) -> Callable[[httpx.Request], httpx.Response]:
    """Answers a batch: item i fails with ``failed[i]``, the others are created."""

    def answer(request: httpx.Request) -> httpx.Response:
        devices = device_list(request)
        items = [
            failed[i] if i in failed else created(d, f"asset{i:03d}") for i, d in enumerate(devices)
        ]
        ok = len(devices) - len(failed)
        return envelope(code, msg, items, successSize=ok, totalSize=len(devices))

    return answer


# ------------------------------------------------------------------------- partial success
@pytest.mark.parametrize(("code", "msg"), [(0, "OK"), (99206, "Partial Content Success")])
def test_mixed_result_is_read_item_by_item(code: int, msg: str) -> None:
    failure = {"code": 11702, "msg": "DeviceKey existed", "data": None}
    fake = FakeEnos(answers=[batch_answer(code, msg, {1: failure})])
    with fake.client() as enos:
        result = enos.batch_create("o-demo", DEVICES)
    assert (result.code, result.success_size, result.total_size) == (code, 2, 3)
    assert [item.kind for item in result.items] == [
        ItemKind.CREATED,
        ItemKind.EXISTS,
        ItemKind.CREATED,
    ]
    assert [item.asset_id for item in result.items] == ["asset000", None, "asset002"]
    assert result.items[2].device_key == "meter-0003"
    assert result.items[1].error_code == 11702 and result.items[0].error_code is None


@pytest.mark.parametrize(
    ("msg", "kind", "code"),
    [
        ("DeviceKey existed", ItemKind.EXISTS, 11702),
        ("DeviceKey already exists", ItemKind.EXISTS, 11702),
        ("Generate deviceKey failed", ItemKind.RETRY, 11714),
        ("Exceed max device size", ItemKind.PRODUCT_FULL, 11739),
        ("Unable to find public key for the service account", ItemKind.NO_PUBLIC_KEY, 11858),
        ("format wrong", ItemKind.FAILED, -1),
    ],
)
@pytest.mark.parametrize("top_code", [0, 99206])
def test_minus_one_items_are_classified_by_their_documented_message(
    top_code: int, msg: str, kind: ItemKind, code: int
) -> None:
    failure = {"code": -1, "msg": msg, "data": None}
    fake = FakeEnos(answers=[batch_answer(top_code, "Partial Content Success", {0: failure})])
    with fake.client() as enos:
        result = enos.batch_create("o-demo", DEVICES)
    item = result.items[0]
    assert not item.ok and item.code == -1 and item.message == msg
    assert item.asset_id is None
    assert (item.kind, item.error_code) == (kind, code)
    assert result.items[1].kind is ItemKind.CREATED


def test_failed_item_whose_data_is_a_text() -> None:
    # The event service's batchCreate puts a description in ``data`` of a failed item.
    failure = {"code": -1, "msg": "format wrong", "data": "timezone :parameter empty"}
    fake = FakeEnos(answers=[batch_answer(99206, "Partial Content Success", {2: failure})])
    with fake.client() as enos:
        result = enos.batch_create("o-demo", DEVICES)
    assert [item.ok for item in result.items] == [True, True, False]
    assert result.items[2].kind is ItemKind.FAILED


def test_success_without_an_asset_id_is_not_taken_as_created() -> None:
    fake = FakeEnos(answers=[envelope(0, "OK", [{"code": 0, "msg": "OK", "data": None}])])
    with fake.client() as enos:
        (item,) = enos.batch_create("o-demo", DEVICES[:1]).items
    assert not item.ok and item.kind is ItemKind.FAILED


TWO_ITEMS = [created(d, f"a{i}") for i, d in enumerate(DEVICES[:2])]


@pytest.mark.parametrize("data", [TWO_ITEMS, None, {"assetId": "x"}], ids=["2-of-3", "null", "obj"])
def test_an_answer_that_cannot_be_matched_by_position_is_ambiguous(data: Any) -> None:
    fake = FakeEnos(answers=[envelope(0, "OK", data)])
    with fake.client() as enos, pytest.raises(errors.AmbiguousError, match="3 devices"):
        enos.batch_create("o-demo", DEVICES)


# ------------------------------------------------------------------ whole-request refusals
WHOLE_REQUEST = [
    (99400, "Invalid arguments", errors.InvalidArgumentsError, 400),
    (99403, "Denied resource:  orgId o-x", errors.PermanentError, 403),
    (99404, "Not found", errors.PermanentError, 404),
    (99500, " Internal Server Error", errors.TransientError, 500),
    (11858, "Unable to find public key for the service account", errors.ConfigurationError, 400),
]


@pytest.mark.parametrize(("code", "msg", "error", "error_status"), WHOLE_REQUEST)
@pytest.mark.parametrize("in_status", [False, True], ids=["http-200", "http-error"])
def test_whole_request_codes(
    code: int, msg: str, error: type[errors.EnosError], error_status: int, in_status: bool
) -> None:
    # EnOS does not say which HTTP status carries a business error; the code decides either way.
    body = {"code": code, "msg": msg, "requestId": "r", "data": None}
    fake = FakeEnos(answers=[httpx.Response(error_status if in_status else 200, json=body)])
    with fake.client() as enos, pytest.raises(error) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert type(caught.value) is error
    if error_status < 500:
        assert caught.value.code == code
        assert msg.strip() in str(caught.value)
    if code == 11858:
        assert "create the RSA key pair" in str(caught.value)


@pytest.mark.parametrize("http_status", [200, 404])
@pytest.mark.parametrize("code", [11404, 99404])
def test_get_device_that_does_not_exist_is_none(code: int, http_status: int) -> None:
    body = {"code": code, "msg": "Device cannot be found", "requestId": "r", "data": None}
    fake = FakeEnos(answers=[httpx.Response(http_status, json=body)])
    with fake.client() as enos:
        assert enos.get_device("o-demo", product_key="pk-meter", device_key="nope") is None


# --------------------------------------------------------------------------- gateway errors
def test_throttled_with_retry_after_seconds() -> None:
    answer = httpx.Response(
        429, json={"message": "API rate limit exceeded"}, headers={"Retry-After": "3"}
    )
    fake = FakeEnos(answers=[answer])
    with fake.client() as enos, pytest.raises(errors.RateLimitedError) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert isinstance(caught.value, errors.TransientError)
    assert caught.value.retry_after == 3.0
    assert caught.value.http_status == 429
    assert "API rate limit exceeded" in str(caught.value)


def test_throttled_with_retry_after_as_an_http_date() -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    answer = httpx.Response(
        429, json={"message": "API rate limit exceeded"}, headers={"Retry-After": when}
    )
    fake = FakeEnos(answers=[answer])
    with fake.client() as enos, pytest.raises(errors.RateLimitedError) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert caught.value.retry_after is not None
    assert 27.0 <= caught.value.retry_after <= 30.0


@pytest.mark.parametrize(
    "answer",
    [
        httpx.Response(503, html="<html><body><h1>Service Unavailable</h1></body></html>"),
        httpx.Response(500, json={"message": "An unexpected error occurred"}),
        httpx.Response(502, text=""),
    ],
    ids=["503-html", "500", "502-empty"],
)
def test_server_errors_are_transient(answer: httpx.Response) -> None:
    fake = FakeEnos(answers=[answer])
    with fake.client() as enos, pytest.raises(errors.TransientError) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert type(caught.value) is errors.TransientError
    assert caught.value.sent is True
    assert caught.value.http_status == answer.status_code


@pytest.mark.parametrize(
    ("status", "error"),
    [(403, errors.PermanentError), (413, errors.InvalidArgumentsError)],
)
def test_other_gateway_refusals(status: int, error: type[errors.EnosError]) -> None:
    fake = FakeEnos(answers=[httpx.Response(status, json={"message": "refused"})])
    with fake.client() as enos, pytest.raises(error) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert type(caught.value) is error and caught.value.http_status == status


def test_ok_status_with_a_body_that_is_not_json_is_ambiguous() -> None:
    fake = FakeEnos(answers=[httpx.Response(200, text="<html>maintenance</html>")])
    with fake.client() as enos, pytest.raises(errors.AmbiguousError):
        enos.batch_create("o-demo", DEVICES)


def test_envelope_without_a_code_is_ambiguous() -> None:
    fake = FakeEnos(answers=[httpx.Response(200, json={"msg": "OK", "data": []})])
    with fake.client() as enos, pytest.raises(errors.AmbiguousError):
        enos.batch_create("o-demo", DEVICES)


# ------------------------------------------------------------------------- transport errors
def test_connection_refused_is_transient_and_not_sent() -> None:
    fake = FakeEnos(answers=[httpx.ConnectError("Connection refused")])
    with fake.client() as enos, pytest.raises(errors.TransientError) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert caught.value.sent is False
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    assert len(fake.api_requests) == 1


def test_token_service_unreachable_is_transient_and_not_sent() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    with (
        EnosClient("https://enos.example", APP_KEY, APP_SECRET, transport=transport) as enos,
        pytest.raises(errors.TransientError) as caught,
    ):
        enos.batch_create("o-demo", DEVICES)
    assert caught.value.sent is False


@pytest.mark.parametrize(
    "exc",
    [
        httpx.ReadTimeout("timed out"),
        httpx.RemoteProtocolError("Server disconnected without sending a response."),
        httpx.ReadError("Connection reset by peer"),
        httpx.WriteTimeout("timed out"),
    ],
    ids=lambda exc: type(exc).__name__,
)
def test_lost_answer_after_sending_is_ambiguous(exc: Exception) -> None:
    fake = FakeEnos(answers=[exc])
    with fake.client() as enos, pytest.raises(errors.AmbiguousError) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert caught.value.__cause__ is exc
    assert len(fake.api_requests) == 1  # the client never sends it again on its own


# ---------------------------------------------------------------------------------- tokens
def test_refused_token_is_fetched_again_exactly_once_then_auth_error() -> None:
    refused = httpx.Response(401, json={"message": "Invalid authentication credentials"})
    fake = FakeEnos(answers=[refused])
    with fake.client() as enos, pytest.raises(errors.AuthError) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert fake.token_paths == ["get", "get"]
    assert len(fake.api_requests) == 2
    assert caught.value.http_status == 401
    assert "Invalid authentication credentials" in str(caught.value)


def test_refused_token_then_accepted_after_fetching_it_again() -> None:
    refused = httpx.Response(401, json={"message": "Invalid authentication credentials"})
    fake = FakeEnos(answers=[refused, batch_answer(0, "OK", {})])
    with fake.client() as enos:
        result = enos.batch_create("o-demo", DEVICES)
    assert all(item.ok for item in result.items)
    assert fake.token_paths == ["get", "get"]
    assert len(fake.api_requests) == 2


@pytest.mark.parametrize("apim_status", [4011, 4012])
def test_token_refused_in_the_body_is_fetched_again(apim_status: int) -> None:
    refused = httpx.Response(200, json={"apim_status": apim_status, "msg": "token expired"})
    fake = FakeEnos(answers=[refused, batch_answer(0, "OK", {})])
    with fake.client() as enos:
        enos.batch_create("o-demo", DEVICES)
    assert fake.token_paths == ["get", "get"]


@pytest.mark.parametrize(
    ("status", "msg"), [(1002, "appKey does not exist"), (1003, "encryption not valid")]
)
def test_token_service_refusal_is_auth_error(status: int, msg: str) -> None:
    fake = FakeEnos(answers=[batch_answer(0, "OK", {})])
    fake.token_answers = [token_answer(status, msg), token_answer(status, msg)]
    with fake.client() as enos, pytest.raises(errors.AuthError) as caught:
        enos.batch_create("o-demo", DEVICES)
    assert caught.value.code == status
    assert msg in str(caught.value)
    assert fake.api_requests == []
    assert isinstance(caught.value, errors.ConfigurationError)


@pytest.mark.parametrize("status", [401, 403])
def test_token_service_http_refusal_is_auth_error(status: int) -> None:
    fake = FakeEnos(answers=[batch_answer(0, "OK", {})])
    fake.token_answers = [httpx.Response(status, json={"message": "no"})] * 2
    with fake.client() as enos, pytest.raises(errors.AuthError):
        enos.batch_create("o-demo", DEVICES)
    assert fake.api_requests == []


def test_token_answer_with_the_documented_misspelling_is_accepted() -> None:
    fake = FakeEnos(answers=[batch_answer(0, "OK", {})])
    data = {"accessToken": "token-x", "expire": 7200}
    fake.token_answers = [token_answer(0, "SUCCESS", data, key="stauts")]
    fake.issued["token-x"] = time.time() + 7200
    with fake.client() as enos:
        assert all(item.ok for item in enos.batch_create("o-demo", DEVICES).items)
    assert fake.api_requests[0].headers["apim-accesstoken"] == "token-x"


def test_a_token_is_reused_across_calls() -> None:
    fake = FakeEnos(answers=[batch_answer(0, "OK", {})])
    with fake.client() as enos:
        for _ in range(3):
            enos.batch_create("o-demo", DEVICES)
    assert fake.token_paths == ["get"]
    assert len({r.headers["apim-accesstoken"] for r in fake.api_requests}) == 1
