"""``enos-import validate``: a dry run. Every row is checked; nothing is created.

Offline it applies EnOS's documented rules and finds repeated deviceKeys. With API credentials
it also asks EnOS whether each product exists, how much room each product has left, and which
deviceKeys are already taken (and whether by the same device, which an import would adopt).
"""

from __future__ import annotations

import hashlib
import sys
from collections import Counter
from pathlib import Path

import click
import orjson

from worker.cli.common import (
    FILE_ARGUMENT,
    FORMAT_OPTION,
    INSECURE_OPTION,
    ORG_OPTION,
    open_input,
    settings_from,
    stderr,
)
from worker.enos import errors
from worker.importer.intake import prepare_row
from worker.runtime import make_client

PRODUCT_CAP = 10_000
KEY_GROUP = 200


@click.command()
@FILE_ARGUMENT
@ORG_OPTION
@FORMAT_OPTION
@INSECURE_OPTION
@click.option("--offline", is_flag=True, help="Only the documented rules; do not ask EnOS.")
@click.option("--product-cap", type=click.IntRange(min=0), default=PRODUCT_CAP, show_default=True,
              help="Devices a product may hold on this EnOS.")  # fmt: skip
def validate(
    file: Path,
    org_id: str | None,
    fmt: str | None,
    insecure: bool | None,
    offline: bool,
    product_cap: int,
) -> None:
    """Check every row of FILE (exit 0: all good; 3: problems found, listed on stdout)."""
    settings = settings_from(org_id=org_id, verify_tls=False if insecure else None)
    source = open_input(file, fmt, settings)
    content_sha256 = source.sha256()
    problems = 0
    seen: dict[bytes, int] = {}
    per_product: Counter[str] = Counter()
    keyed: list[tuple[int, str, str, str]] = []  # line, product, key, name
    rows = 0
    for row in source.rows():
        rows += 1
        prepared = prepare_row(row, settings.org_id, content_sha256, settings.key_mode)
        if prepared.problems:
            problems += 1
            click.echo(f"{file}: {prepared.problems}")
            continue
        key = prepared.device_key
        if key is not None:
            digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
            first = seen.setdefault(digest, prepared.line)
            if first != prepared.line:
                problems += 1
                click.echo(f"{file}: line {prepared.line}: deviceKey: {key} repeats line {first}")
                continue
        product = prepared.product_key or ""
        per_product[product] += 1
        if key is not None and prepared.payload is not None:
            name = (orjson.loads(prepared.payload).get("deviceName") or {}).get("defaultValue")
            keyed.append((prepared.line, product, key, str(name)))
    # The file itself, not one of its rows: counted apart. A file without a row is one that
    # an import would fail, as the intake does.
    file_problem = source.error or (None if rows else "the file has no devices")
    if file_problem is not None:
        click.echo(f"{file}: {file_problem}")  # a reader's message names its line
    live = 0
    if not offline and settings.access_key:
        live = _live_checks(settings, file, per_product, keyed, product_cap)
    elif not offline:
        stderr.print("no ENOS_IMPORT_ACCESS_KEY: only the documented rules were checked")
    total = problems + live + (file_problem is not None)
    stderr.print(
        f"{file}: {rows} rows, {rows - problems} valid, {problems} invalid"
        + ("" if offline or not settings.access_key else f", {live} problems on EnOS")
        + ("" if file_problem is None else "; the file itself has a problem (above)"),
        highlight=False,
    )
    sys.exit(3 if total else 0)


def _live_checks(
    settings: object,
    file: Path,
    per_product: Counter[str],
    keyed: list[tuple[int, str, str, str]],
    product_cap: int,
) -> int:
    from worker.settings import Settings

    assert isinstance(settings, Settings)
    problems = 0
    with make_client(settings) as client:
        try:
            for product, wanted in sorted(per_product.items()):
                if client.get_product(settings.org_id, product) is None:
                    problems += 1
                    click.echo(
                        f"{file}: productKey {product}: no such product in {settings.org_id}"
                    )
                    continue
                room = product_cap - client.count_devices(settings.org_id, product)
                if wanted > room:
                    problems += 1
                    click.echo(
                        f"{file}: productKey {product}: {wanted} devices to create, room for "
                        f"{max(room, 0)} (11739 Exceed max device size)"
                    )
            for start in range(0, len(keyed), KEY_GROUP):
                group = keyed[start : start + KEY_GROUP]
                found = client.find_devices(settings.org_id, [key for _, _, key, _ in group])
                for line, product, key, name in group:
                    device = found.get(key)
                    if device is None:
                        continue
                    if device.product_key == product and device.default_name == name:
                        click.echo(
                            f"{file}:{line}: deviceKey {key} exists already as this "
                            f"device (assetId {device.asset_id}): it will be adopted"
                        )
                    else:
                        problems += 1
                        click.echo(
                            f"{file}:{line}: deviceKey {key} is taken by another device "
                            f"(assetId {device.asset_id}, product {device.product_key})"
                        )
        except errors.EnosError as exc:
            raise click.ClickException(f"EnOS: {exc}") from exc
    return problems
