"""Resources of the simulated Connection Service: the Device and Product structs, product
lookups, paging and request bodies."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response

from worker.simulator.responses import Reply, envelope
from worker.simulator.search import ExpressionError, compile_expression
from worker.simulator.state import Org, Product, StoredDevice

SEARCH_PAGE_MAX = 200


def device_json(org: Org, device: StoredDevice, secret: tuple[str, str] | None) -> dict[str, Any]:
    product = org.products[device.product_key]
    data: dict[str, Any] = {
        "orgId": org.org_id,
        "assetId": device.asset_id,
        "modelId": product.model_id,
        "modelIdPath": f"/{product.model_id}",
        "productKey": device.product_key,
        "productName": {"defaultValue": product.name, "i18nValue": {}},
        "productType": "Device",
        "dataFormat": "Json",
        "deviceKey": device.device_key,
        "deviceName": device.name,
        "deviceDesc": device.desc,
        "timezone": device.timezone,
        "deviceAttributes": device.attributes,
        "deviceTags": device.tags,
        "createTime": device.create_time,
        "activeTime": None,
        "lastOnlineTime": None,
        "lastOfflineTime": None,
        "status": "inactive",
    }
    if secret is not None:
        data["deviceSecret"], data["sessionKey"] = secret
    return data


def products_answer(
    action: str, org: Org, params: dict[str, str], payload: dict[str, Any]
) -> Response:
    if action == "get":
        product = org.products.get(params.get("productKey", ""))
        if product is None:
            raise Reply(11611, "Not found")
        return envelope(0, "OK", product_json(product))
    if action == "search":
        expression = payload.get("expression")
        keys = set(org.products)
        if expression:
            keys = product_keys(expression, keys)
        page_no, page_size = pagination(payload.get("pagination"))
        found = sorted(keys)
        page = found[(page_no - 1) * page_size : page_no * page_size]
        return envelope(
            0,
            "OK",
            [product_json(org.products[k]) for k in page],
            pagination={
                "sortedBy": None,
                "pageNo": page_no,
                "pageSize": page_size,
                "totalSize": len(found),
            },
        )
    raise Reply(99400, f"Invalid Argument action: unsupported action {action}")


def product_keys(expression: str, keys: set[str]) -> set[str]:
    try:
        matcher = compile_expression(expression)
    except ExpressionError as exc:
        raise Reply(99400, f"Invalid Argument expression: {exc}") from exc
    # Products reuse the device matcher on a synthetic org whose "devices" are the product keys.
    probe = Org("products")
    for key in keys:
        probe.by_key[key] = StoredDevice("products", key, key, key, {}, "", None, {}, {}, "", 0, 0)
        probe.by_asset[key] = probe.by_key[key]
    return {probe.by_asset[a].product_key for a in matcher(probe)}


def product_json(product: Product) -> dict[str, Any]:
    return {
        "orgId": product.org_id,
        "productKey": product.product_key,
        "productName": {"defaultValue": product.name, "i18nValue": {}},
        "productDesc": None,
        "productType": "Device",
        "dataFormat": "Json",
        "productTags": {},
        "modelId": product.model_id,
        "dynamicActiveEnabled": False,
        "biDirectionalAuth": False,
        "createTime": product.created,
    }


def pagination(value: Any) -> tuple[int, int]:
    if value is None:
        return 1, 10
    if not isinstance(value, dict):
        raise Reply(99400, "Invalid Argument pagination: must be an object")
    page_no, page_size = value.get("pageNo", 1), value.get("pageSize", 10)
    if not isinstance(page_no, int) or page_no < 1:
        raise Reply(99400, "Invalid Argument pagination.pageNo: must be a whole number from 1")
    if not isinstance(page_size, int) or not 0 < page_size <= SEARCH_PAGE_MAX:
        raise Reply(99400, f"Invalid Argument pagination.pageSize: must be 1 to {SEARCH_PAGE_MAX}")
    return page_no, page_size


def json_body(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Reply(
            99400, f"Invalid Argument body: not valid JSON ({exc})", http_status=400
        ) from exc
    if not isinstance(payload, dict):
        raise Reply(99400, "Invalid Argument body: must be a JSON object", http_status=400)
    return payload
