"""``make demo``: a real batchCreate against the local simulator, shown as a table.

Starts the simulator on a free loopback port (seeded with the demo account), sends the sample
request of the V2.4 Batch Create Devices page through the EnOS client, and prints each device's
outcome. Needs no services.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from worker.enos.client import EnosClient
from worker.enos.secret_box import Opener
from worker.simulator.app import create_app
from worker.simulator.server import serve_in_thread
from worker.simulator.state import DEMO_APP_KEY, DEMO_APP_SECRET, DEMO_ORG, Store

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "batch-create-sample.json"


def main() -> int:
    console = Console()
    store = Store()
    account = store.seed_demo()
    body = orjson.loads(SAMPLE.read_bytes())
    with (
        serve_in_thread(create_app(store)) as url,
        EnosClient(url, DEMO_APP_KEY, DEMO_APP_SECRET) as enos,
    ):
        console.print(f"simulator at {url}; sending {SAMPLE.name} to org {DEMO_ORG}")
        result = enos.batch_create(DEMO_ORG, body["deviceList"], require_secret=True)
    assert account.private_pem is not None
    opener = Opener(account.private_pem)
    table = Table(title=f"batchCreate: {result.success_size} of {result.total_size} created")
    for column in ("#", "productKey", "deviceKey", "assetId", "status", "secret decrypts"):
        table.add_column(column)
    for index, item in enumerate(result.items, 1):
        decrypts = "-"
        if item.device_secret and item.session_key:
            decrypts = "yes" if opener.open(item.device_secret, item.session_key) else "no"
        table.add_row(
            str(index),
            item.product_key or "",
            item.device_key or "",
            item.asset_id or "",
            "created" if item.ok else f"{item.error_code}: {item.message}",
            decrypts,
        )
    console.print(table)
    return 0 if all(item.ok for item in result.items) else 1


if __name__ == "__main__":
    sys.exit(main())
