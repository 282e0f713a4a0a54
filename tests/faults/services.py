"""The simulator of the fault suite: a real process with its state in a file, so that it keeps
every device across the suite. The private PostgreSQL and Redis, and the processes, come from
tests/harness.

Nothing here touches the shared PostgreSQL and Redis of the machine.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from tests.harness.processes import BIN, Proc, free_port, wait_until


class Simulator:
    def __init__(
        self, root: Path, faults: str, auth: str = "strict", product_cap: int = 10_000_000
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.state = root / "simulator.db"
        argv = [str(BIN / "enos-import"), "simulator", "--port", str(self.port), "--seed-demo",
                "--state", str(self.state), "--auth", auth, "--faults", faults,
                "--product-cap", str(product_cap), "--ou-cap", "100000000",
                "--private-key-out", str(root / "demo-key.pem")]  # fmt: skip
        self.process = Proc("simulator", argv, dict(os.environ), root, root / "simulator.log")

    def start(self) -> None:
        self.process.start()
        wait_until(
            lambda: httpx.get(f"{self.url}/__sim/stats", timeout=2).status_code == 200,
            "the simulator", 30, [self.process],
        )  # fmt: skip

    def set_faults(self, profile: dict[str, float]) -> None:
        httpx.post(f"{self.url}/__sim/faults", json=profile, timeout=10).raise_for_status()

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.url}/__sim/stats", timeout=30).json())

    def devices(self) -> list[dict[str, object]]:
        import orjson

        response = httpx.get(f"{self.url}/__sim/devices", timeout=120)
        return [orjson.loads(line) for line in response.content.splitlines() if line]

    def stop(self) -> None:
        self.process.stop()
