"""Answer shapes of the simulated gateway: the EnOS envelope, gateway errors and lost answers."""

from __future__ import annotations

import asyncio
import socket
import struct
import uuid
from typing import Any, cast

import orjson
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

TRANSPORT_EXTENSION = "enos_sim.transport"
HOLD_LIMIT_S = 120.0


class Reply(Exception):
    """Ends a request early with an EnOS business error (HTTP 200 and the code in the body)."""

    def __init__(self, code: int, msg: str, http_status: int = 200) -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.http_status = http_status


def envelope(code: int, msg: str, data: Any = None, **extra: Any) -> Response:
    body = {"code": code, "msg": msg, "requestId": str(uuid.uuid4()), "data": data, **extra}
    return Response(orjson.dumps(body), media_type="application/json")


def business_error(reply: Reply) -> Response:
    body = {"code": reply.code, "msg": reply.msg, "requestId": str(uuid.uuid4()), "data": None}
    return Response(
        orjson.dumps(body), status_code=reply.http_status, media_type="application/json"
    )


def gateway_error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    """A gateway-level refusal, Kong-style: ``{"message": …}``."""
    return Response(
        orjson.dumps({"message": message}),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def html_error(status: int, title: str) -> Response:
    page = f"<html><head><title>{status} {title}</title></head><body><h1>{title}</h1></body></html>"
    return Response(page, status_code=status, media_type="text/html")


class ResetResponse(Response):
    """Drops the connection without an answer, with a TCP reset (SO_LINGER 0)."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await reset_connection(scope)


class HoldResponse(Response):
    """Keeps the caller waiting (the work is done) until it gives up, then drops the line."""

    def __init__(self) -> None:
        super().__init__(b"")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if _transport(scope) is None:
            raise TimeoutError("simulated lost answer (in-process: no connection to hold)")
        try:
            async with asyncio.timeout(HOLD_LIMIT_S):
                while (await receive())["type"] != "http.disconnect":
                    pass
        except TimeoutError:
            pass
        await reset_connection(scope)


def _transport(scope: Scope) -> asyncio.Transport | None:
    transport = scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
    # Checked by its methods: uvloop's transports (the server's loop) do not derive from
    # asyncio.Transport, and an isinstance check would turn every reset into an HTTP 500.
    if transport is None or not callable(getattr(transport, "abort", None)):
        return None
    return cast(asyncio.Transport, transport)


async def reset_connection(scope: Scope) -> None:
    transport = _transport(scope)
    if transport is None:
        # In-process (ASGITransport) there is no socket to reset: fail the call instead.
        raise ConnectionResetError("simulated connection reset")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the server see the connection go before the app returns, so it logs nothing.
    await asyncio.sleep(0)
    await asyncio.sleep(0)
