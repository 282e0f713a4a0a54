"""The call time of one batchCreate, and the official SDK's plain loop (the baseline)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from bench.throughput.config import (
    BATCH,
    ORG,
    PROBE_CALLS,
    BenchError,
)
from bench.throughput.inputs import device
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET


# --------------------------------------------------------------------------- call timing
def probe_call_time(url: str, run: str) -> list[float]:
    """Sequential 1,000-device calls with the service's own client: the bound's call time."""
    from worker.enos.client import EnosClient

    times = []
    with EnosClient(url, DEMO_APP_KEY, DEMO_APP_SECRET, read_timeout=60) as client:
        for call in range(PROBE_CALLS):
            batch = [device(f"{run}{call}", i) for i in range(BATCH)]
            t0 = time.perf_counter()
            result = client.batch_create(ORG, batch)  # type: ignore[arg-type]
            times.append(time.perf_counter() - t0)
            if sum(1 for item in result.items if item.asset_id) != BATCH:
                raise BenchError("the probe call did not create every device")
    return times


@dataclass
class SdkRun:
    calls: int
    devices: int
    wall_s: float
    call_s: list[float]

    @property
    def devices_per_s(self) -> float:
        return self.devices / self.wall_s


def sdk_baseline(url: str, run: str, calls: int) -> SdkRun:
    """The plain script: the official SDK calling batchCreate in a loop, one call at a time."""
    from poseidon import poseidon

    endpoint = f"{url}/connect-service/v2.4/devices?action=batchCreate&orgId={ORG}"
    bodies = [
        {"deviceList": [device(f"{run}{call}", i) for i in range(BATCH)]} for call in range(calls)
    ]
    times = []
    t0 = time.perf_counter()
    for body in bodies:
        c0 = time.perf_counter()
        answer = poseidon.urlopen(DEMO_APP_KEY, DEMO_APP_SECRET, endpoint, data=body, timeout=60)
        times.append(time.perf_counter() - c0)
        if not isinstance(answer, dict) or answer.get("code") != 0:
            raise BenchError(f"the SDK call failed: {str(answer)[:300]}")
        if answer.get("successSize") != BATCH:
            raise BenchError(f"the SDK call did not create every device: {str(answer)[:300]}")
    wall = time.perf_counter() - t0
    return SdkRun(calls, calls * BATCH, wall, times)
