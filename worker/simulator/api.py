"""The simulated Connection Service: devices and products, with EnOS's rules, limits and codes."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import Response

from worker.enos.validation import check_create_option
from worker.simulator.auth import AuthFailure, AuthMode, TokenBook
from worker.simulator.faults import FaultProfile
from worker.simulator.resources import device_json, json_body, pagination, products_answer
from worker.simulator.responses import (
    HoldResponse,
    Reply,
    ResetResponse,
    business_error,
    envelope,
    gateway_error,
    html_error,
)
from worker.simulator.search import ExpressionError, compile_expression
from worker.simulator.state import Account, Org, Store, StoredDevice

ItemErrorForm = Literal["coded", "minus1"]
# EnOS documents neither order of its checks for a taken deviceKey in a full product.
CheckOrder = Literal["exists-first", "room-first"]


@dataclass
class SimConfig:
    auth: AuthMode = "permissive"
    mixed_code: int = 0  # top-level code when some items fail: 0, or 99206 as other EnOS services
    item_errors: ItemErrorForm = "coded"  # "minus1": failed items carry code -1 and data null
    check_order: CheckOrder = "exists-first"  # "room-first": 11739 before 11702


@dataclass
class Stats:
    calls: int = 0
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    item_errors: Counter[int] = field(default_factory=Counter)


class ConnectApi:
    def __init__(self, store: Store, config: SimConfig, faults: FaultProfile) -> None:
        self.store = store
        self.config = config
        self.faults = faults
        self.tokens = TokenBook()
        self.stats = Stats()

    # ------------------------------------------------------------------------------ entry
    async def devices(self, request: Request) -> Response:
        return await self._dispatch(request, "devices")

    async def products(self, request: Request) -> Response:
        return await self._dispatch(request, "products")

    async def _dispatch(self, request: Request, resource: str) -> Response:
        self.stats.requests += 1
        body = await request.body()
        query = request.query_params.multi_items()
        try:
            account = self.tokens.account_for(
                self.store, self.config.auth, dict(request.headers), query, body
            )
        except AuthFailure as exc:
            return gateway_error(401, f"Invalid authentication credentials: {exc}")
        version = request.path_params["version"]
        params = dict(query)
        action = params.get("action")
        try:
            if not action:
                raise Reply(99400, "Invalid Argument action:action is missing")
            org = self._org(params, account)
            payload = json_body(body) if body else {}
            if resource == "products":
                return products_answer(action, org, params, payload)
            if action == "batchCreate":
                return await self._batch_create(version, org, account, payload)
            if action == "create":
                return self._create(version, org, account, payload)
            if action == "get":
                return self._get_device(version, org, account, params)
            if action == "search":
                return self._search_devices(org, payload)
            if action == "delete":
                return self._delete(org, params)
            raise Reply(99400, f"Invalid Argument action: unsupported action {action}")
        except Reply as reply:
            return business_error(reply)

    def _org(self, params: dict[str, str], account: Account | None) -> Org:
        org_id = params.get("orgId")
        if not org_id:
            raise Reply(99400, "Invalid Argument orgId: orgId is missing")
        org = self.store.orgs.get(org_id)
        if org is None:
            raise Reply(99400, f"Invalid Argument orgId: orgId {org_id} does not exist")
        if account is not None and org_id not in account.orgs:
            raise Reply(99403, f"Denied resource: orgId {org_id}")
        return org

    # -------------------------------------------------------------------------- batchCreate
    async def _batch_create(
        self, version: str, org: Org, account: Account | None, payload: dict[str, Any]
    ) -> Response:
        self.stats.calls += 1
        devices = payload.get("deviceList")
        if not isinstance(devices, list) or not devices:
            raise Reply(99400, "Invalid Argument deviceList: deviceList is missing or empty")
        if len(devices) > self.store.limits.batch_max:
            raise Reply(
                99400,
                "Invalid arguments: the number of devices created by this request "
                f"({len(devices)}) exceeds the limit for the maximum number of devices created "
                f"in a single batch ({self.store.limits.batch_max})",
            )
        sealer = self._sealer(version, org, account, payload)
        faults = self.faults
        delay = faults.delay_s(len(devices))
        if delay:
            await asyncio.sleep(delay)
        fault = self._draw_fault()
        refused = self._before_commit(fault)
        if refused is not None:
            return refused

        results, created = self._create_all(version, org, devices, sealer)
        self.store.commit_devices(created)

        lost = _after_commit(fault)
        if lost is not None:
            return lost
        ok = len(created)
        if ok < len(devices) and self.config.item_errors == "minus1":
            # The other item form EnOS documents; applied here, so Create Device keeps its code.
            results = [r if r["code"] == 0 else _minus1(r) for r in results]
        code, msg = (0, "OK") if ok == len(devices) else (self._mixed())
        return envelope(code, msg, results, successSize=ok, totalSize=len(devices))

    def _draw_fault(self) -> str | None:
        fault = self.faults.draw_call_fault()
        if fault is not None:
            self.stats.faults[fault] += 1
        return fault

    def _before_commit(self, fault: str | None) -> Response | None:
        """The answer of a call-level fault that happens before anything is done."""
        if fault == "http500":
            return gateway_error(500, "An unexpected error occurred")
        if fault == "http503":
            return html_error(503, "Service Unavailable")
        if fault == "http429":
            retry_after = f"{self.faults.retry_after_s:g}"
            return gateway_error(429, "API rate limit exceeded", {"Retry-After": retry_after})
        if fault == "reset_before_commit":
            return ResetResponse()
        return None

    def _mixed(self) -> tuple[int, str]:
        if self.config.mixed_code == 0:
            return 0, "OK"
        return self.config.mixed_code, "Partial Content Success"

    def _sealer(
        self, version: str, org: Org, account: Account | None, payload: dict[str, Any]
    ) -> Any:
        require = payload.get("requireSecret", False)
        if not isinstance(require, bool):
            raise Reply(99400, "Invalid Argument requireSecret: must be a boolean")
        if not require or version != "v2.4":
            return None
        owner = account or next(
            (a for a in self.store.accounts.values() if org.org_id in a.orgs and a.sealer), None
        )
        if owner is None or owner.sealer is None:
            raise Reply(
                11858,
                "Unable to find public key for requireSecret due to there is no RSA key pair "
                "for the service account",
            )
        return owner.sealer

    def _check(
        self,
        org: Org,
        option: Any,
        per_product: Counter[str],
        taken: set[str],
        created: int,
    ) -> tuple[dict[str, Any] | None, str]:
        """One CreateOption against EnOS's rules, in EnOS's order: the item's refusal (or
        ``None``) and its deviceKey (generated when the option has none)."""
        limits = self.store.limits
        problems = check_create_option(option)
        if problems:
            first = problems[0]
            return self._fail(99400, f"Invalid Argument {first.field}: {first.message}", option), ""
        product_key = option["productKey"]
        if product_key not in org.products:
            return self._fail(11611, f"Product not found: {product_key}", option), ""
        device_key = option.get("deviceKey")
        room_left = org.per_product[product_key] + per_product[product_key] < limits.product_cap
        if not room_left and self.config.check_order == "room-first":
            return self._fail(11739, "Exceed max device size", option), ""
        if device_key is None:
            if self.faults.draw_item11714():
                return self._fail(11714, "Generate deviceKey failed", option), ""
            device_key = self.store.new_device_key(org)
        elif device_key in org.by_key or device_key in taken:
            return self._fail(11702, "DeviceKey existed", option), ""
        if not room_left:
            return self._fail(11739, "Exceed max device size", option), ""
        if len(org.by_key) + created >= limits.ou_cap:
            message = "Invalid arguments: exceed max device asset size of the organization"
            return self._fail(99400, message, option), ""
        return None, str(device_key)

    def _create_all(
        self, version: str, org: Org, devices: list[Any], sealer: Any
    ) -> tuple[list[dict[str, Any]], list[StoredDevice]]:
        store = self.store
        results: list[dict[str, Any]] = []
        created: list[StoredDevice] = []
        taken: set[str] = set()
        per_product: Counter[str] = Counter()
        now = int(time.time() * 1000)
        for option in devices:
            refusal, device_key = self._check(org, option, per_product, taken, len(created))
            if refusal is not None:
                results.append(refusal)
                continue
            product_key = option["productKey"]
            device = StoredDevice(
                org.org_id,
                store.new_asset_id(),
                product_key,
                device_key,
                option["deviceName"],
                option["timezone"],
                option.get("deviceDesc"),
                option.get("deviceAttributes") or {},
                option.get("deviceTags") or {},
                store.new_secret(),
                now,
                store.next_seq(),
            )
            taken.add(device_key)
            per_product[product_key] += 1
            created.append(device)
            results.append(
                {"code": 0, "msg": "OK", "data": self._create_result(version, device, sealer)}
            )
        return results, created

    def _create_result(self, version: str, device: StoredDevice, sealer: Any) -> dict[str, Any]:
        data = {
            "assetId": device.asset_id,
            "productKey": device.product_key,
            "deviceKey": device.device_key,
        }
        if version != "v2.4":
            data["deviceSecret"] = device.secret  # the older versions return it in clear
        elif sealer is not None:
            data["deviceSecret"], data["sessionKey"] = sealer.seal(device.secret)
        return data

    def _fail(self, code: int, msg: str, option: Any) -> dict[str, Any]:
        self.stats.item_errors[code] += 1
        data = None
        if isinstance(option, dict):
            data = {"productKey": option.get("productKey"), "deviceKey": option.get("deviceKey")}
        return {"code": code, "msg": msg, "data": data}

    # ------------------------------------------------------------------------- single device
    def _create(
        self, version: str, org: Org, account: Account | None, payload: dict[str, Any]
    ) -> Response:
        option = {k: v for k, v in payload.items() if k != "requireSecret"}
        sealer = self._sealer(version, org, account, payload)
        results, created = self._create_all(version, org, [option], sealer)
        self.store.commit_devices(created)
        result = results[0]
        if result["code"] != 0:
            raise Reply(result["code"], result["msg"])
        return envelope(0, "OK", result["data"])

    def _find(self, org: Org, params: dict[str, str]) -> StoredDevice:
        asset_id = params.get("assetId")
        if asset_id:
            device = org.by_asset.get(asset_id)
        elif params.get("productKey") and params.get("deviceKey"):
            device = org.by_key.get(params["deviceKey"])
            if device is not None and device.product_key != params["productKey"]:
                device = None
        else:
            raise Reply(99400, "Invalid Argument: assetId or productKey and deviceKey are required")
        if device is None:
            raise Reply(11404, "Device cannot be found")
        return device

    def _get_device(
        self, version: str, org: Org, account: Account | None, params: dict[str, str]
    ) -> Response:
        device = self._find(org, params)
        if version != "v2.4":
            data = device_json(org, device, None)
            data["deviceSecret"] = device.secret  # the older versions return it in clear
            return envelope(0, "OK", data)
        secret: tuple[str, str] | None = None
        if params.get("requireSecret", "").lower() == "true":
            sealer = self._sealer(version, org, account, {"requireSecret": True})
            secret = sealer.seal(device.secret) if sealer is not None else None
        return envelope(0, "OK", device_json(org, device, secret))

    def _search_devices(self, org: Org, payload: dict[str, Any]) -> Response:
        expression = payload.get("expression")
        try:
            matcher = compile_expression(expression) if expression else None
        except ExpressionError as exc:
            raise Reply(99400, f"Invalid Argument expression: {exc}") from exc
        page_no, page_size = pagination(payload.get("pagination"))
        ids = matcher(org) if matcher else set(org.by_asset)
        found = sorted((org.by_asset[a] for a in ids), key=lambda d: d.seq, reverse=True)
        page = found[(page_no - 1) * page_size : page_no * page_size]
        return envelope(
            0,
            "OK",
            [device_json(org, d, None) for d in page],
            pagination={
                "sortedBy": None,
                "pageNo": page_no,
                "pageSize": page_size,
                "totalSize": len(found),
            },
        )

    def _delete(self, org: Org, params: dict[str, str]) -> Response:
        # Delete Device draws the same call-level faults as batchCreate (a rollback is tested
        # under them), and like it can lose its answer after the device is gone.
        fault = self._draw_fault()
        refused = self._before_commit(fault)
        if refused is not None:
            return refused
        self.store.delete_device(self._find(org, params))
        lost = _after_commit(fault)
        return lost if lost is not None else envelope(0, "OK", None)


def _after_commit(fault: str | None) -> Response | None:
    """The answer of a call-level fault that loses the answer after the work was done."""
    if fault == "timeout_after_commit":
        return HoldResponse()
    if fault == "reset_after_commit":
        return ResetResponse()
    return None


def _minus1(result: dict[str, Any]) -> dict[str, Any]:
    return {"code": -1, "msg": result["msg"], "data": None}
