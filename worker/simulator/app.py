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


class Controls:
    """The token service and the ``/__sim/*`` controls, over one store and its API."""

    def __init__(self, api: ConnectApi, store: Store) -> None:
        self.api = api
        self.store = store

    async def token_get(self, request: Request) -> Response:
        return _json(
            self.api.tokens.answer(self.store, _loads(await request.body()), refresh=False)
        )

    async def token_refresh(self, request: Request) -> Response:
        return _json(self.api.tokens.answer(self.store, _loads(await request.body()), refresh=True))

    async def get_faults(self, request: Request) -> Response:
        return JSONResponse(self.api.faults.as_dict())

    async def set_faults(self, request: Request) -> Response:
        try:
            values = orjson.loads(await request.body() or b"{}")
            if not isinstance(values, dict):
                raise FaultSpecError("the fault profile is a JSON object")
            self.api.faults = FaultProfile.from_mapping(values)
        except (orjson.JSONDecodeError, FaultSpecError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(self.api.faults.as_dict())

    async def stats(self, request: Request) -> Response:
        return JSONResponse(
            {
                "calls": self.api.stats.calls,
                "requests": self.api.stats.requests,
                "devices": self.store.device_count(),
                "created": self.store.created_total,
                "faults": dict(self.api.stats.faults),
                "item_errors": {str(k): v for k, v in self.api.stats.item_errors.items()},
                "limits": {
                    "batch_max": self.store.limits.batch_max,
                    "product_cap": self.store.limits.product_cap,
                    "ou_cap": self.store.limits.ou_cap,
                },
            }
        )

    async def devices(self, request: Request) -> Response:
        async def lines() -> AsyncIterator[bytes]:
            for device in list(self.store.assets.values()):
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

    async def reset(self, request: Request) -> Response:
        self.store.clear_devices()
        self.api.stats.calls = self.api.stats.requests = 0
        self.api.stats.faults.clear()
        self.api.stats.item_errors.clear()
        self.store.created_total = 0
        return JSONResponse({"devices": 0})

    async def add_product(self, request: Request) -> Response:
        body = _loads(await request.body())
        if not isinstance(body, dict) or not body.get("orgId") or not body.get("productKey"):
            return JSONResponse({"error": "orgId and productKey are required"}, status_code=400)
        self.store.add_product(str(body["orgId"]), str(body["productKey"]), body.get("name"))
        return JSONResponse({"ok": True})

    async def add_account(self, request: Request) -> Response:
        body = _loads(await request.body())
        if not isinstance(body, dict) or not body.get("appKey") or not body.get("appSecret"):
            return JSONResponse({"error": "appKey and appSecret are required"}, status_code=400)
        orgs = {str(o) for o in body.get("orgs", [])}
        for org_id in orgs:
            self.store.add_org(org_id)
        pem = body.get("privateKeyPem")
        self.store.add_account(
            str(body["appKey"]), str(body["appSecret"]), orgs, pem.encode() if pem else None
        )
        return JSONResponse({"ok": True})

    async def set_limits(self, request: Request) -> Response:
        body = _loads(await request.body())
        if not isinstance(body, dict):
            return JSONResponse({"error": "a JSON object of limits"}, status_code=400)
        for name in ("batch_max", "product_cap", "ou_cap"):
            if name in body:
                setattr(self.store.limits, name, int(body[name]))
        return await self.stats(request)

    def routes(self) -> list[Route]:
        return [
            Route(f"{TOKEN_BASE}/get", self.token_get, methods=["POST"]),
            Route(f"{TOKEN_BASE}/refresh", self.token_refresh, methods=["POST"]),
            Route("/__sim/faults", self.get_faults, methods=["GET"]),
            Route("/__sim/faults", self.set_faults, methods=["POST"]),
            Route("/__sim/stats", self.stats, methods=["GET"]),
            Route("/__sim/devices", self.devices, methods=["GET"]),
            Route("/__sim/reset", self.reset, methods=["POST"]),
            Route("/__sim/products", self.add_product, methods=["POST"]),
            Route("/__sim/accounts", self.add_account, methods=["POST"]),
            Route("/__sim/limits", self.set_limits, methods=["POST"]),
        ]


def create_app(
    store: Store,
    config: SimConfig | None = None,
    faults: FaultProfile | None = None,
) -> Starlette:
    """An ASGI app over ``store``; ``app.state.api`` gives tests the live objects."""
    api = ConnectApi(store, config or SimConfig(), faults or FaultProfile())

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        store.close()

    app = Starlette(
        routes=[
            *Controls(api, store).routes(),
            Route("/connect-service/{version:str}/devices", api.devices, methods=["GET", "POST"]),
            Route("/connect-service/{version:str}/products", api.products, methods=["GET", "POST"]),
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
