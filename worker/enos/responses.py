"""EnOS's answers read once, at the edge: a success body, or the error class it means.

Business errors come as an envelope (``{"code", "msg", "requestId", "data"}``) on HTTP 200 or on a
4xx; gateway errors as a Kong-style ``{"message": …}``, an envelope, or an HTML page.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any, Final

import httpx
import orjson

from worker.enos import errors
from worker.enos.models import (
    DEVICE_NOT_FOUND,
    INVALID_ARGUMENTS,
    NO_PUBLIC_KEY,
    PARTIAL_SUCCESS,
    PRODUCT_NOT_FOUND,
    ItemResult,
)

# Codes of EnOS's token service and gateway that mean "these credentials or this token are refused".
AUTH_CODES: Final = frozenset({401, 1001, 1002, 1003, 1202, 1203, 1204, 4011, 4012})
NOT_FOUND_CODES: Final = frozenset({DEVICE_NOT_FOUND, PRODUCT_NOT_FOUND, 99404})
OK_CODES: Final = frozenset({0, PARTIAL_SUCCESS})
_TAGS: Final = re.compile(r"<[^>]*>")


def interpret(response: httpx.Response) -> dict[str, Any]:
    """The body of a successful answer, or the error class that the answer means."""
    if response.status_code == 401:
        raise errors.AuthError(
            f"EnOS refused the credentials: {gateway_message(response)}", http_status=401
        )
    if business_code(response) is None:
        raise_for_gateway_status(response)
    answer = json_object(response)
    if answer.get("apim_status") in (4011, 4012):
        raise errors.AuthError("EnOS refused the access token", code=answer["apim_status"])
    code = answer.get("code")
    if code in OK_CODES:
        return answer
    message = str(answer.get("msg") or answer.get("message") or "no message")
    if not isinstance(code, int):
        raise errors.AmbiguousError(f"EnOS answered without a result code: {message[:200]}")
    if code == INVALID_ARGUMENTS:
        raise errors.InvalidArgumentsError(message, code=code)
    if code == NO_PUBLIC_KEY:
        raise errors.ConfigurationError(no_public_key_message(message), code=code)
    if code in AUTH_CODES:
        raise errors.AuthError(message, code=code)
    if code // 100 == 995:
        raise errors.TransientError(message, code=code)
    raise errors.PermanentError(message, code=code)


def no_public_key_message(message: str) -> str:
    """11858, for the whole request or one item: what the operator has to do about it."""
    return (
        f"{message}: create the RSA key pair of the service account in the EnOS console "
        "(Identity and Access Management > Service Account > RSA Key Pairs), or import "
        "without --require-secret"
    )


def business_code(response: httpx.Response) -> int | None:
    """The EnOS error code of a 4xx answer whose body is an envelope, else ``None``.

    EnOS does not document the HTTP status of business errors (200 is inferred): a 99400 or a
    99404 that comes with a 400 or a 404 must still be judged by its code.
    """
    if not 400 <= response.status_code < 500 or response.status_code in (401, 429):
        return None
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    if not isinstance(code, int) or isinstance(code, bool) or code in OK_CODES:
        return None
    return code


def raise_for_gateway_status(response: httpx.Response) -> None:
    status = response.status_code
    if status < 400:
        return
    message = gateway_message(response)
    if status == 429:
        raise errors.RateLimitedError(
            f"EnOS is throttling calls: {message}",
            http_status=status,
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    if status >= 500:
        raise errors.TransientError(
            f"EnOS answered HTTP {status}: {message}",
            http_status=status,
            retry_after=retry_after(response.headers.get("Retry-After")),
        )
    if status == 413:
        raise errors.InvalidArgumentsError(f"request too large: {message}", http_status=status)
    if status == 401:
        raise errors.AuthError(f"EnOS refused the credentials: {message}", http_status=status)
    raise errors.PermanentError(f"EnOS answered HTTP {status}: {message}", http_status=status)


def gateway_message(response: httpx.Response) -> str:
    """The message of a gateway error body (``{"message": …}``, an envelope, or HTML)."""
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        text = " ".join(_TAGS.sub(" ", response.text).split())
        return text[:200] or response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("message") or body.get("msg") or response.reason_phrase)[:200]
    return response.reason_phrase


def json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        body = orjson.loads(response.content)
    except orjson.JSONDecodeError as exc:
        raise errors.AmbiguousError(
            f"EnOS answered HTTP {response.status_code} with a body that is not JSON"
        ) from exc
    if not isinstance(body, dict):
        raise errors.AmbiguousError("EnOS answered with JSON that is not an object")
    return body


def item_result(entry: Any) -> ItemResult:
    if not isinstance(entry, dict):
        return ItemResult(ok=False, code=None, message="EnOS returned no result for this device")
    code = entry.get("code")
    message = entry.get("msg")
    if not isinstance(message, str):
        message = str(message or "")
    data = entry.get("data")
    if not isinstance(data, dict):
        data = _NO_DATA
    # This runs for every device of every answer: opt_str is written out in place (a call per
    # field cost a third of the function), and the result is built positionally (keywords cost
    # a third more): (ok, code, message, asset_id, device_key, product_key, device_secret,
    # session_key).
    asset_id = data.get("assetId")
    if not (isinstance(asset_id, str) and asset_id):
        asset_id = None
    ok = code == 0 and (message == "OK" or message.upper() in ("OK", "")) and asset_id is not None
    if code == 0 and not ok:
        message = message or "EnOS reported success without an assetId"
    device_key = data.get("deviceKey")
    product_key = data.get("productKey")
    secret = data.get("deviceSecret")
    session_key = data.get("sessionKey")
    return ItemResult(
        ok,
        code if isinstance(code, int) else None,
        "OK" if ok else message,
        asset_id,
        device_key if isinstance(device_key, str) and device_key else None,
        product_key if isinstance(product_key, str) and product_key else None,
        secret if isinstance(secret, str) and secret else None,
        session_key if isinstance(session_key, str) and session_key else None,
    )


_NO_DATA: dict[str, Any] = {}


def retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def opt_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
