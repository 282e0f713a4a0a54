"""The benchmark's input: device files and CreateOptions of three products."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.throughput.config import (
    PRODUCTS,
)

# ------------------------------------------------------------------------------- inputs
HEADER = (
    "productKey,deviceKey,deviceName,deviceName.zh_CN,timezone,deviceDesc,attr.serial,"
    "attr.ratedPowerKw,tag.site,tag.row\n"
)
SITES = ("north-ridge", "sea-breeze", "mesa-alta", "lake-view")
ZONES = ("+08:00", "Asia/Shanghai", "America/Mexico_City", "Europe/Berlin")


def write_csv(path: Path, run: str, devices: int) -> Path:
    """``devices`` rows over three products, deviceKeys unique to ``run``."""
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        rows = []
        for i in range(devices):
            product = PRODUCTS[i % 3]
            site = SITES[i % 4]
            rows.append(
                f"{product},{run}-{i:07d},{product} {site} {i},设备{i}号,{ZONES[i % 4]},"
                f"{product} on row {i % 40} of {site},SN{i:09d},{250 + i % 7},{site},{i % 40}\n"
            )
            if len(rows) >= 10_000:
                out.writelines(rows)
                rows.clear()
        out.writelines(rows)
    return path


def device(run: str, i: int) -> dict[str, Any]:
    product = PRODUCTS[i % 3]
    site = SITES[i % 4]
    return {
        "productKey": product,
        "deviceKey": f"{run}-{i:07d}",
        "deviceName": {
            "defaultValue": f"{product} {site} {i}",
            "i18nValue": {"zh_CN": f"设备{i}号"},
        },
        "timezone": ZONES[i % 4],
        "deviceDesc": f"{product} on row {i % 40} of {site}",
        "deviceAttributes": {"serial": f"SN{i:09d}", "ratedPowerKw": 250 + i % 7},
        "deviceTags": {"site": site, "row": str(i % 40)},
    }
