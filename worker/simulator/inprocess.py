"""A synchronous httpx transport that calls the simulator's ASGI app in this process.

httpx's own ``ASGITransport`` serves only async clients; the EnOS client is synchronous (it runs
in Celery worker threads), so this wraps ``ASGITransport`` with an event loop on its own thread.
Lost answers the simulator produces in-process become the httpx errors a socket would give.
"""

from __future__ import annotations

import asyncio
import threading

import httpx
from starlette.types import ASGIApp


class InProcessTransport(httpx.BaseTransport):
    def __init__(self, app: ASGIApp) -> None:
        self._inner = httpx.ASGITransport(app=app)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="enos-simulator-inprocess", daemon=True
        )
        self._thread.start()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def call() -> tuple[int, httpx.Headers, bytes]:
            forwarded = httpx.Request(
                request.method, request.url, headers=request.headers, content=request.read()
            )
            response = await self._inner.handle_async_request(forwarded)
            return response.status_code, response.headers, await response.aread()

        future = asyncio.run_coroutine_threadsafe(call(), self._loop)
        try:
            status, headers, body = future.result()
        except ConnectionResetError as exc:
            raise httpx.ReadError(str(exc), request=request) from exc
        except TimeoutError as exc:
            raise httpx.ReadTimeout(str(exc), request=request) from exc
        return httpx.Response(status, headers=headers, content=body, request=request)

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
        if not self._loop.is_running():
            self._loop.close()
