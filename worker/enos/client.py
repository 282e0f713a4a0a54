"""The EnOS Connection Service client: one per process, thread-safe, signed calls.

Every library exception and every EnOS answer that is not a success is translated here, once,
into the error tree of :mod:`worker.enos.errors`. The client never retries a call on its own
(the import decides, from the class), except that it fetches a token again once when EnOS
refuses the current one, or the token service refuses to give one.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final

import httpx
import orjson
from pydantic import SecretStr

from worker.enos import errors, responses
from worker.enos.models import (
    BatchResult,
    CreateOption,
    Device,
    Product,
)
from worker.enos.signing import request_signature, token_encryption

TOKEN_PATH: Final = "/apim-token-service/v2.0/token/get"
REFRESH_PATH: Final = "/apim-token-service/v2.0/token/refresh"
DEVICES_PATH: Final = "/connect-service/v2.4/devices"
PRODUCTS_PATH: Final = "/connect-service/v2.4/products"
SEARCH_PAGE_MAX: Final = 200


class EnosClient:
    """Signed calls to one EnOS API gateway with one service account.

    ``transport`` is the test seam: ``httpx.ASGITransport(app=simulator)`` runs the simulator
    in-process; ``None`` uses real sockets.
    """

    def __init__(
        self,
        base_url: str,
        access_key: str,
        secret_key: str | SecretStr,
        *,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_connections: int = 16,
        verify: bool | ssl.SSLContext = True,
        transport: httpx.BaseTransport | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._access_key = access_key
        self._secret = secret_key if isinstance(secret_key, SecretStr) else SecretStr(secret_key)
        self._clock = clock
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout, pool=read_timeout),
            limits=httpx.Limits(
                max_connections=max_connections, max_keepalive_connections=max_connections
            ),
            verify=verify,
            transport=transport,
            headers={"User-Agent": "enos-import"},
        )
        self._token_lock = threading.Lock()
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._token_lifetime = 0.0
        self._token_timestamp_ms = 0

    # ----------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> EnosClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------- devices
    def batch_create(
        self,
        org_id: str,
        devices: Sequence[CreateOption],
        *,
        require_secret: bool = False,
    ) -> BatchResult:
        """One V2.4 batchCreate call; item results are matched to ``devices`` by position.

        A top-level code of 0 or 99206 ("partial content success") both mean "read every item".
        """
        body: dict[str, Any] = {"deviceList": devices}
        if require_secret:
            body["requireSecret"] = True
        answer = self._call("POST", DEVICES_PATH, {"action": "batchCreate", "orgId": org_id}, body)
        data = answer.get("data")
        if not isinstance(data, list) or len(data) != len(devices):
            got = len(data) if isinstance(data, list) else type(data).__name__
            raise errors.AmbiguousError(
                f"batchCreate answered {got} results for {len(devices)} devices; "
                "they cannot be matched to the request"
            )
        items = [responses.item_result(entry) for entry in data]
        return BatchResult(
            code=int(answer.get("code", 0)),
            message=str(answer.get("msg", "")),
            request_id=responses.opt_str(answer.get("requestId")),
            items=items,
            success_size=responses.opt_int(answer.get("successSize")),
            total_size=responses.opt_int(answer.get("totalSize")),
        )

    def get_device(
        self,
        org_id: str,
        *,
        product_key: str | None = None,
        device_key: str | None = None,
        asset_id: str | None = None,
        require_secret: bool = False,
    ) -> Device | None:
        """The device, or ``None`` when EnOS says it does not exist. With ``require_secret``,
        EnOS adds its ``deviceSecret`` and ``sessionKey``, sealed for the account's RSA key."""
        params = {"action": "get", "orgId": org_id}
        params.update(_device_ref(product_key, device_key, asset_id))
        if require_secret:
            params["requireSecret"] = "true"
        try:
            answer = self._call("GET", DEVICES_PATH, params, None)
        except errors.PermanentError as exc:
            if exc.code in responses.NOT_FOUND_CODES:
                return None
            raise
        data = answer.get("data")
        return Device.from_json(data) if isinstance(data, dict) else None

    def search_devices(self, org_id: str, expression: str) -> Iterator[Device]:
        """Every device matching a Search Device ``expression``, page by page (200 a page)."""
        page_no = 1
        while True:
            body = {
                "expression": expression,
                "pagination": {"pageNo": page_no, "pageSize": SEARCH_PAGE_MAX},
            }
            answer = self._call("POST", DEVICES_PATH, {"action": "search", "orgId": org_id}, body)
            data = answer.get("data") or []
            if not isinstance(data, list):
                raise errors.TransientError("search answered without a device list")
            for entry in data:
                if isinstance(entry, dict):
                    yield Device.from_json(entry)
            total = responses.opt_int((answer.get("pagination") or {}).get("totalSize"))
            if len(data) < SEARCH_PAGE_MAX or (
                total is not None and page_no * SEARCH_PAGE_MAX >= total
            ):
                return
            page_no += 1

    def find_devices(
        self, org_id: str, device_keys: Sequence[str], *, group: int = 100
    ) -> dict[str, Device]:
        """The devices that exist among ``device_keys``, by deviceKey (keys are unique per OU)."""
        found: dict[str, Device] = {}
        for start in range(0, len(device_keys), group):
            keys = device_keys[start : start + group]
            quoted = ",".join(f"'{_quote(key)}'" for key in keys)
            for device in self.search_devices(org_id, f"deviceKey in ({quoted})"):
                found[device.device_key] = device
        return found

    def count_devices(self, org_id: str, product_key: str) -> int:
        """How many devices a product has (for the capacity check of a dry run)."""
        body = {
            "expression": f"productKey = '{_quote(product_key)}'",
            "pagination": {"pageNo": 1, "pageSize": 1},
        }
        answer = self._call("POST", DEVICES_PATH, {"action": "search", "orgId": org_id}, body)
        total = responses.opt_int((answer.get("pagination") or {}).get("totalSize"))
        if total is None:
            raise errors.TransientError("search answered without pagination.totalSize")
        return total

    def delete_device(
        self,
        org_id: str,
        *,
        product_key: str | None = None,
        device_key: str | None = None,
        asset_id: str | None = None,
    ) -> bool:
        """Deletes a device; ``False`` when it did not exist."""
        params = {"action": "delete", "orgId": org_id}
        params.update(_device_ref(product_key, device_key, asset_id))
        try:
            self._call("POST", "/connect-service/v2.1/devices", params, None)
        except errors.PermanentError as exc:
            if exc.code in responses.NOT_FOUND_CODES:
                return False
            raise
        return True

    # ------------------------------------------------------------------------------ products
    def get_product(self, org_id: str, product_key: str) -> Product | None:
        params = {"action": "get", "orgId": org_id, "productKey": product_key}
        try:
            answer = self._call("GET", PRODUCTS_PATH, params, None)
        except errors.PermanentError as exc:
            if exc.code in responses.NOT_FOUND_CODES:
                return None
            raise
        data = answer.get("data")
        if not isinstance(data, dict):
            return None
        return Product(product_key=str(data.get("productKey", product_key)), raw=data)

    # ----------------------------------------------------------------------------- transport
    def _call(
        self, method: str, path: str, params: dict[str, str], body: Any | None
    ) -> dict[str, Any]:
        content = orjson.dumps(body) if body is not None else b""
        token: str | None = None
        for attempt in range(2):
            # A refused token, or a refusal of the token service itself, earns one fresh try.
            try:
                token = self._access_token()
                timestamp = int(self._clock() * 1000)
                signature = request_signature(
                    token, params.items(), content, timestamp, self._secret.get_secret_value()
                )
                headers = {
                    "apim-accesstoken": token,
                    "apim-signature": signature,
                    "apim-timestamp": str(timestamp),
                    "Content-Type": "application/json;charset=UTF-8",
                }
                response = self._send(method, path, params, content, headers)
                return responses.interpret(response)
            except errors.AuthError:
                if attempt:
                    raise
                if token is not None:
                    self._forget_token(token)
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        content: bytes,
        headers: dict[str, str],
    ) -> httpx.Response:
        try:
            return self._http.request(
                method, path, params=params, content=content or None, headers=headers
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # The request never left this process: sending it again cannot duplicate anything.
            raise errors.TransientError(
                f"EnOS could not be reached: {type(exc).__name__}", sent=False
            ) from exc
        except httpx.TransportError as exc:
            # Read timeouts, resets and half-written requests: EnOS may have done the work.
            raise errors.AmbiguousError(
                f"the answer from EnOS was lost: {type(exc).__name__}"
            ) from exc

    # --------------------------------------------------------------------------------- token
    def check_token(self) -> None:
        """Gets a token (or keeps a fresh one): the account's credentials work."""
        self._access_token()

    def _access_token(self) -> str:
        with self._token_lock:
            now = self._clock()
            margin = max(60.0, self._token_lifetime * 0.1)
            if self._token is not None and now < self._token_expires_at - margin:
                return self._token
            if self._token is not None and now < self._token_expires_at:
                try:
                    self._fetch_token(REFRESH_PATH, {"accessToken": self._token})
                except errors.AuthError:
                    self._fetch_token(TOKEN_PATH, {})
            else:
                self._fetch_token(TOKEN_PATH, {})
            assert self._token is not None
            return self._token

    def _forget_token(self, token: str) -> None:
        with self._token_lock:
            if self._token == token:
                self._token = None

    def _fetch_token(self, path: str, extra: dict[str, str]) -> None:
        # The token service refuses a repeated ``encryption`` (1001), and the encryption depends
        # only on the timestamp: two token requests in one millisecond (a refresh refused, then a
        # get) must not carry the same one.
        timestamp = max(int(self._clock() * 1000), self._token_timestamp_ms + 1)
        self._token_timestamp_ms = timestamp
        body = {
            "appKey": self._access_key,
            "encryption": token_encryption(
                self._access_key, timestamp, self._secret.get_secret_value()
            ),
            "timestamp": timestamp,
            **extra,
        }
        try:
            response = self._http.post(
                path,
                content=orjson.dumps(body),
                headers={"Content-Type": "application/json;charset=UTF-8"},
            )
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise errors.TransientError(
                "the EnOS token service could not be reached", sent=False
            ) from exc
        except httpx.TransportError as exc:
            # Getting a token creates nothing: losing its answer is as harmless as a refusal.
            raise errors.TransientError(
                f"the EnOS token service did not answer: {type(exc).__name__}"
            ) from exc
        if response.status_code in (401, 403):
            raise errors.AuthError(
                "the token service refused the credentials", http_status=response.status_code
            )
        responses.raise_for_gateway_status(response)
        answer = responses.json_object(response)
        status = answer.get("status", answer.get("stauts", answer.get("code")))
        data = answer.get("data")
        if status == 1005:
            raise errors.TransientError(
                f"the EnOS token service failed: {answer.get('msg', 'internal service exception')}"
            )
        if status != 0 or not isinstance(data, dict) or not data.get("accessToken"):
            code = status if isinstance(status, int) else None
            raise errors.AuthError(
                f"the token service refused appKey {self._access_key!r}: "
                f"{answer.get('msg', 'no message')}",
                code=code,
            )
        expire = float(data.get("expire", 7200))
        self._token = str(data["accessToken"])
        self._token_lifetime = expire
        self._token_expires_at = self._clock() + expire


def _device_ref(
    product_key: str | None, device_key: str | None, asset_id: str | None
) -> dict[str, str]:
    if asset_id:
        return {"assetId": asset_id}
    if product_key and device_key:
        return {"productKey": product_key, "deviceKey": device_key}
    raise ValueError("a device is named by assetId, or by productKey and deviceKey")


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")
