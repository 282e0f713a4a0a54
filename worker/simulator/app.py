"""The simulator's ASGI application: EnOS routes plus ``/__sim/*`` controls for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from worker.simulator.api import ConnectApi, SimConfig
from worker.simulator.faults import FaultProfile, FaultSpecError
from worker.simulator.state import Store

TOKEN_BASE = "/apim-token-service/v2.0/token"


def create_app(
    store: Store,
    config: SimConfig | None = None,
    faults: FaultProfile | None = None,
) -> Starlette:
    """An ASGI app over ``store``; ``app.state.api`` gives tests the live objects."""
    api = ConnectApi(store, config or SimConfig(), faults or FaultProfile())

    async def token_get(request: Request) -> Response:
        return _json(api.tokens.answer(store, _loads(await request.body()), refresh=False))

    async def token_refresh(request: Request) -> Response:
        return _json(api.tokens.answer(store, _loads(await request.body()), refresh=True))

    async def get_faults(request: Request) -> Response:
        return JSONResponse(api.faults.as_dict())

    async def set_faults(request: Request) -> Response:
        try:
            values = orjson.loads(await request.body() or b"{}")
            if not isinstance(values, dict):
                raise FaultSpecError("the fault profile is a JSON object")
            api.faults = FaultProfile.from_mapping(values)
        except (orjson.JSONDecodeError, FaultSpecError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(api.faults.as_dict())

    async def stats(request: Request) -> Response:
        return JSONResponse(
            {
                "calls": api.stats.calls,
                "requests": api.stats.requests,
                "devices": store.device_count(),
                "created": store.created_total,
                "faults": dict(api.stats.faults),
                "item_errors": {str(k): v for k, v in api.stats.item_errors.items()},
                "limits": {
                    "batch_max": store.limits.batch_max,
                    "product_cap": store.limits.product_cap,
                    "ou_cap": store.limits.ou_cap,
                },
            }
        )

    async def devices(request: Request) -> Response:
        async def lines() -> AsyncIterator[bytes]:
            for device in list(store.assets.values()):
                yield (
                    orjson.dumps(
                        {
                            "orgId": device.org_id,
                            "assetId": device.asset_id,
                            "productKey": device.product_key,
                            "deviceKey": device.device_key,
                            "deviceName": device.name,
                            "deviceSecret": device.secret,
                            "createTime": device.create_time,
                        }
                    )
                    + b"\n"
                )

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    async def reset(request: Request) -> Response:
        store.clear_devices()
        api.stats.calls = api.stats.requests = 0
        api.stats.faults.clear()
        api.stats.item_errors.clear()
        store.created_total = 0
        return JSONResponse({"devices": 0})

    async def add_product(request: Request) -> Response:
        body = _loads(await request.body())
        if not isinstance(body, dict) or not body.get("orgId") or not body.get("productKey"):
            return JSONResponse({"error": "orgId and productKey are required"}, status_code=400)
        store.add_product(str(body["orgId"]), str(body["productKey"]), body.get("name"))
        return JSONResponse({"ok": True})

    async def add_account(request: Request) -> Response:
        body = _loads(await request.body())
        if not isinstance(body, dict) or not body.get("appKey") or not body.get("appSecret"):
            return JSONResponse({"error": "appKey and appSecret are required"}, status_code=400)
        orgs = {str(o) for o in body.get("orgs", [])}
        for org_id in orgs:
            store.add_org(org_id)
        pem = body.get("privateKeyPem")
        store.add_account(
            str(body["appKey"]), str(body["appSecret"]), orgs, pem.encode() if pem else None
        )
        return JSONResponse({"ok": True})

    async def set_limits(request: Request) -> Response:
        body = _loads(await request.body())
        if not isinstance(body, dict):
            return JSONResponse({"error": "a JSON object of limits"}, status_code=400)
        for name in ("batch_max", "product_cap", "ou_cap"):
            if name in body:
                setattr(store.limits, name, int(body[name]))
        return await stats(request)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    app = Starlette(
        routes=[
            Route(f"{TOKEN_BASE}/get", token_get, methods=["POST"]),
            Route(f"{TOKEN_BASE}/refresh", token_refresh, methods=["POST"]),
            Route("/connect-service/{version:str}/devices", api.devices, methods=["GET", "POST"]),
            Route("/connect-service/{version:str}/products", api.products, methods=["GET", "POST"]),
            Route("/__sim/faults", get_faults, methods=["GET"]),
            Route("/__sim/faults", set_faults, methods=["POST"]),
            Route("/__sim/stats", stats, methods=["GET"]),
            Route("/__sim/devices", devices, methods=["GET"]),
            Route("/__sim/reset", reset, methods=["POST"]),
            Route("/__sim/products", add_product, methods=["POST"]),
            Route("/__sim/accounts", add_account, methods=["POST"]),
            Route("/__sim/limits", set_limits, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.api = api
    app.state.store = store
    return app


def _loads(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _json(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type="application/json")
