"""The services an end-to-end test talks to: the simulator's admin endpoints, the settings of
every process we start, and the import database's two views."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, cast

import httpx
from sqlalchemy import text

from tests.harness.processes import Proc, base_env
from worker.db.session import Database
from worker.enos.client import EnosClient
from worker.enos.models import CreateOption
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG

# Short timings keep a test quick and bounded; they still nest as the settings demand
# (read timeout < lease < visibility timeout).
TIMINGS = {
    "ENOS_IMPORT_BACKOFF_BASE_S": "0.2",
    "ENOS_IMPORT_BACKOFF_MAX_S": "2",
    "ENOS_IMPORT_READ_TIMEOUT_S": "10",
    "ENOS_IMPORT_LEASE_S": "30",
    "ENOS_IMPORT_VISIBILITY_TIMEOUT_S": "60",
    "ENOS_IMPORT_SWEEP_INTERVAL_S": "1",
}


def process_env(api_url: str, database_url: str, broker_url: str | None = None) -> dict[str, str]:
    """The environment of an import process: the simulator's demo account, a database, a
    broker, and the short timings."""
    env = base_env()
    env.update(TIMINGS)
    env.update(
        ENOS_IMPORT_API_URL=api_url,
        ENOS_IMPORT_ACCESS_KEY=DEMO_APP_KEY,
        ENOS_IMPORT_SECRET_KEY=DEMO_APP_SECRET,
        ENOS_IMPORT_DATABASE_URL=database_url,
        ENOS_IMPORT_LOG_LEVEL="INFO",
        ENOS_IMPORT_LOG_FORMAT="json",
    )
    if broker_url is not None:
        env["ENOS_IMPORT_BROKER_URL"] = broker_url
    return env


@dataclass
class Simulator:
    """The simulator server process, and what it holds, through its ``/__sim`` endpoints."""

    url: str
    proc: Proc

    def _http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, trust_env=False)

    def up(self) -> bool:
        try:
            self.stats()
        except httpx.TransportError:
            return False
        return True

    def stats(self) -> dict[str, Any]:
        with self._http() as http:
            response = http.get("/__sim/stats")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    def devices(self) -> dict[str, dict[str, Any]]:
        """Every device of the demo org, by deviceKey; a deviceKey held twice fails the test."""
        with self._http() as http:
            response = http.get("/__sim/devices")
        response.raise_for_status()
        found: dict[str, dict[str, Any]] = {}
        for line in response.text.splitlines():
            device = json.loads(line)
            if device["orgId"] != DEMO_ORG:
                continue
            assert device["deviceKey"] not in found, f"EnOS holds {device['deviceKey']} twice"
            found[device["deviceKey"]] = device
        return found

    def set_limits(self, **limits: int) -> None:
        with self._http() as http:
            response = http.post("/__sim/limits", json=limits)
        response.raise_for_status()
        got = response.json()["limits"]
        assert all(got[name] == value for name, value in limits.items()), got

    def set_faults(self, spec: dict[str, float]) -> None:
        with self._http() as http:
            response = http.post("/__sim/faults", json=spec)
        response.raise_for_status()

    def create_devices(self, options: list[dict[str, Any]]) -> dict[str, str]:
        """Creates devices through EnOS's own API (signed, as strict auth demands); returns
        their assetIds by deviceKey."""
        with EnosClient(self.url, DEMO_APP_KEY, DEMO_APP_SECRET, read_timeout=10) as client:
            result = client.batch_create(DEMO_ORG, [cast(CreateOption, o) for o in options])
        assert all(item.asset_id for item in result.items), result
        return {
            str(option["deviceKey"]): str(item.asset_id)
            for option, item in zip(options, result.items, strict=True)
        }


def job_id_from(stdout: str, stderr: str = "") -> str:
    """The job id that ``submit`` and ``run`` print: alone, on the first line of stdout."""
    first = stdout.splitlines()[0] if stdout else ""
    try:
        job_id = str(uuid.UUID(first))
    except ValueError:
        job_id = ""
    assert first and first == job_id, f"first line of stdout is not a job id: {stdout!r}\n{stderr}"
    return job_id


def job_status(db: Database, job_id: str) -> dict[str, Any] | None:
    with db.read() as session:
        row = (
            session.execute(
                text("SELECT * FROM import_job_status WHERE job_id = :job_id"), {"job_id": job_id}
            )
            .mappings()
            .first()
        )
    return dict(row) if row is not None else None


def job_ids(db: Database) -> list[str]:
    with db.read() as session:
        return [str(r[0]) for r in session.execute(text("SELECT job_id FROM import_job_status"))]


def outcomes(db: Database, job_id: str) -> dict[int, dict[str, Any]]:
    """``import_device_outcome`` of one job, by line."""
    with db.read() as session:
        rows = session.execute(
            text("SELECT * FROM import_device_outcome WHERE job_id = :job_id ORDER BY line_no"),
            {"job_id": job_id},
        ).mappings()
        return {int(row["line_no"]): dict(row) for row in rows}


FINAL = ("completed", "completed_with_errors", "failed", "cancelled")
