"""Serving the simulator with uvicorn, on a port or in a background thread (for tests)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.host import free_port
from worker.simulator.responses import TRANSPORT_EXTENSION

# A simulator process keeps every device it creates (two GC-tracked objects each) and makes few
# reference cycles. With the default thresholds (700, 10, 10), full collections, each walking every
# stored device, took 35-45% of its CPU while it grew to 200,000-1,000,000 devices.
SERVE_GC_THRESHOLDS = (10_000, 50, 100)


class SimulatorProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, handing the connection's transport to the app.

    The app needs it to drop a connection with a real TCP reset, or to hold an answer until the
    caller gives up: the two ways EnOS answers get lost in the wild.
    """

    def on_message_begin(self) -> None:
        super().on_message_begin()
        scope: Any = self.scope
        scope["extensions"] = {TRANSPORT_EXTENSION: self.transport}


def make_config(app: Starlette, host: str, port: int, **kwargs: Any) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=SimulatorProtocol,
        loop="uvloop",
        access_log=False,
        log_level="warning",
        timeout_keep_alive=30,
        **kwargs,
    )


def serve(app: Starlette, host: str, port: int) -> None:
    """Runs the simulator in this process (which it owns: it also tunes the collector)."""
    gc.set_threshold(*SERVE_GC_THRESHOLDS)
    uvicorn.Server(make_config(app, host, port)).run()


@contextmanager
def serve_in_thread(app: Starlette, host: str = "127.0.0.1") -> Iterator[str]:
    """Runs ``app`` on a free loopback port for the duration; yields its base URL."""
    port = free_port(host)
    server = uvicorn.Server(make_config(app, host, port))
    thread = threading.Thread(target=server.run, name="enos-simulator", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the simulator did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
