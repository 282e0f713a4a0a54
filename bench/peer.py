"""The strong peer: what a capable engineer writes in an afternoon instead of adopting enos-import.

A plain asyncio + httpx script. It reads the CSV file row by row (the same columns the service
reads: productKey, deviceKey, deviceName, deviceName.<locale>, timezone, deviceDesc, attr.<id>,
tag.<key>), cuts it into 1,000-device batches and keeps ``--concurrency`` V2.4 batchCreate calls
in flight, signed with an APIM token. No database, no outcome kept beyond a count, no
exactly-once: a call that fails is tried again twice after a pause, then counted as failed.

The service account comes from the service's own variables (``ENOS_IMPORT_API_URL``,
``ENOS_IMPORT_ACCESS_KEY``, ``ENOS_IMPORT_SECRET_KEY``, ``ENOS_IMPORT_ORG_ID``), so that the
bench hands both tools the same environment. It prints one JSON line: devices read, created,
failed, calls made and seconds taken.

    .venv/bin/python -m bench.peer FILE [--concurrency 8] [--batch 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from worker.enos.signing import request_signature, token_encryption

TOKEN_PATH = "/apim-token-service/v2.0/token/get"
DEVICES_PATH = "/connect-service/v2.4/devices"
ATTEMPTS = 3
PAUSE_S = 1.0


@dataclass
class Tally:
    devices: int = 0
    created: int = 0
    failed: int = 0
    calls: int = 0
    seconds: float = 0.0


def attribute(text: str) -> Any:
    """A cell that reads as a number is sent as one (the product model's types are numbers)."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def device(row: dict[str, str]) -> dict[str, Any]:
    option: dict[str, Any] = {}
    for column, value in row.items():
        if not value:
            continue
        if column == "deviceName":
            option.setdefault("deviceName", {})["defaultValue"] = value
        elif column.startswith("deviceName."):
            name = option.setdefault("deviceName", {})
            name.setdefault("i18nValue", {})[column.split(".", 1)[1]] = value
        elif column.startswith("attr."):
            option.setdefault("deviceAttributes", {})[column[5:]] = attribute(value)
        elif column.startswith("tag."):
            option.setdefault("deviceTags", {})[column[4:]] = value
        else:
            option[column] = value
    return option


def batches(path: Path, size: int) -> Iterator[list[dict[str, Any]]]:
    with path.open(encoding="utf-8-sig", newline="") as handle:
        batch = []
        for row in csv.DictReader(handle):
            batch.append(device(row))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch


class Peer:
    def __init__(self, http: httpx.AsyncClient, app_key: str, secret: str, org: str) -> None:
        self.http, self.app_key, self.secret, self.org = http, app_key, secret, org
        self.token = ""
        self.tally = Tally()

    async def login(self) -> None:
        stamp = int(time.time() * 1000)
        body = {
            "appKey": self.app_key,
            "encryption": token_encryption(self.app_key, stamp, self.secret),
            "timestamp": stamp,
        }
        answer = (await self.http.post(TOKEN_PATH, json=body)).json()
        self.token = answer["data"]["accessToken"]

    async def create(self, batch: list[dict[str, Any]]) -> None:
        params = {"action": "batchCreate", "orgId": self.org}
        content = json.dumps({"deviceList": batch}, ensure_ascii=False).encode()
        for attempt in range(ATTEMPTS):
            stamp = int(time.time() * 1000)
            headers = {
                "apim-accesstoken": self.token,
                "apim-signature": request_signature(
                    self.token, params.items(), content, stamp, self.secret
                ),
                "apim-timestamp": str(stamp),
                "Content-Type": "application/json;charset=UTF-8",
            }
            self.tally.calls += 1
            try:
                response = await self.http.post(
                    DEVICES_PATH, params=params, content=content, headers=headers
                )
                answer = response.json()
            except (httpx.HTTPError, ValueError):
                answer = {}
            if isinstance(answer.get("data"), list):
                created = sum(1 for item in answer["data"] if item.get("code") == 0)
                self.tally.created += created
                self.tally.failed += len(batch) - created
                return
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(PAUSE_S * (attempt + 1))
        self.tally.failed += len(batch)

    async def run(self, path: Path, size: int, concurrency: int) -> Tally:
        started = time.perf_counter()
        await self.login()
        queue: asyncio.Queue[list[dict[str, Any]] | None] = asyncio.Queue(concurrency)

        async def sender() -> None:
            while (batch := await queue.get()) is not None:
                await self.create(batch)

        senders = [asyncio.create_task(sender()) for _ in range(concurrency)]
        for batch in batches(path, size):
            self.tally.devices += len(batch)
            await queue.put(batch)
        for _ in senders:
            await queue.put(None)
        await asyncio.gather(*senders)
        self.tally.seconds = time.perf_counter() - started
        return self.tally


async def main_async(path: Path, size: int, concurrency: int) -> Tally:
    env = os.environ
    async with httpx.AsyncClient(
        base_url=env.get("ENOS_IMPORT_API_URL", "http://127.0.0.1:8765"),
        timeout=60,
        limits=httpx.Limits(max_connections=concurrency),
        trust_env=False,
    ) as http:
        peer = Peer(
            http,
            env["ENOS_IMPORT_ACCESS_KEY"],
            env["ENOS_IMPORT_SECRET_KEY"],
            env["ENOS_IMPORT_ORG_ID"],
        )
        return await peer.run(path, size, concurrency)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.peer", description=__doc__)
    parser.add_argument("file", type=Path)
    parser.add_argument("--concurrency", type=int, default=8, help="calls in flight")
    parser.add_argument("--batch", type=int, default=1000, help="devices per call")
    args = parser.parse_args(argv)
    tally = asyncio.run(main_async(args.file, args.batch, args.concurrency))
    print(json.dumps(asdict(tally)))
    return 0 if tally.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
