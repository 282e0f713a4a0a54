"""Writes ``devices.csv``: a realistic demo file (a wind farm's turbines, inverters and meters).

Deterministic (seeded), so the committed file can be made again:
``python examples/make_devices.py``.
A few rows are wrong on purpose, as real files are: the import reports them and goes on.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

HEADER = [
    "productKey", "deviceKey", "deviceName", "deviceName.zh_CN", "deviceName.ja_JP",
    "deviceName.es_ES", "timezone", "deviceDesc", "attr.serial", "attr.ratedPowerKw",
    "attr.commissioned", "attr.position", "tag.site", "tag.row",
]  # fmt: skip
SITES = [
    ("north-ridge", "Asia/Shanghai", "北岭"),
    ("sea-breeze", "+08:00", "海风"),
    ("mesa-alta", "America/Mexico_City", "高台"),
]
KINDS = [
    ("pk-turbine", "Turbine", "风机", "風車", "Aerogenerador", 3600),
    ("pk-inverter", "Inverter", "逆变器", "インバータ", "Inversor", 250),
    ("pk-meter", "Meter", "电表", "メーター", "Medidor", 0),
]


def rows(count: int, seed: int = 7) -> list[list[str]]:
    rand = random.Random(seed)
    out: list[list[str]] = []
    for n in range(1, count + 1):
        site, tz, site_zh = SITES[n % len(SITES)]
        product, en, zh, ja, es, power = KINDS[n % len(KINDS)]
        key = f"{site}-{product.removeprefix('pk-')}-{n:05d}"
        # Some rows leave the key to the import (it derives a stable one).
        if n % 10 == 0:
            key = ""
        out.append(
            [
                product, key, f"{en} {site} {n}", f"{site_zh}{zh}{n}号", f"{ja} {n}",
                f"{es} {n}", tz, f"{en} on row {n % 40 + 1} of {site}",
                f"SN{rand.randrange(10**9):09d}", str(power) if power else "",
                "true" if n % 3 else "false",
                f'{{"lat": {30 + rand.random():.5f}, "lon": {120 + rand.random():.5f}}}',
                site, str(n % 40 + 1),
            ]
        )  # fmt: skip
    # Mistakes operators make; each becomes an invalid row with the line, field and rule.
    out[41][6] = "GMT+8"  # not an offset like +08:00, not an IANA zone
    out[342][1] = "x1"  # deviceKey too short
    out[777][0] = ""  # productKey missing
    out[1203][12] = " padded "  # tag value with edge spaces
    out[1999][1] = out[1998][1] or "dup-key-01999"  # repeats the previous row's key
    out[2600][2] = ""  # no device name
    return out


def main() -> None:
    path = Path(__file__).with_name("devices.csv")
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\r\n")
        writer.writerow(HEADER)
        writer.writerows(rows(3000))


if __name__ == "__main__":
    main()
