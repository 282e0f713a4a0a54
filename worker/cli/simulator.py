"""``enos-import simulator``: the local EnOS stand-in, for demos, tests and benchmarks."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from worker.simulator.api import SimConfig
from worker.simulator.app import create_app
from worker.simulator.faults import FaultProfile, FaultSpecError
from worker.simulator.server import serve
from worker.simulator.state import DEMO_APP_KEY, DEMO_ORG, Limits, Store


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8765,
    show_default=True,
    type=click.IntRange(1, 65535),
    help="Port to listen on.",
)
@click.option("--seed-demo", is_flag=True, help="Create the demo org, account and products.")
@click.option(
    "--state",
    type=click.Path(dir_okay=False, path_type=Path),
    help="SQLite file that keeps every device across restarts (default: memory only).",
)
@click.option(
    "--faults", "fault_spec", default="", help="Fault profile, e.g. 'latency_ms=50,http503=0.02'."
)
@click.option(
    "--auth",
    type=click.Choice(["permissive", "strict"]),
    default="permissive",
    show_default=True,
    help="strict: every call needs an issued token and a valid signature.",
)
@click.option(
    "--batch-max",
    type=click.IntRange(min=1),
    default=1000,
    show_default=True,
    help="Devices per batch.",
)
@click.option(
    "--product-cap",
    type=click.IntRange(min=0),
    default=10_000,
    show_default=True,
    help="Devices per product.",
)
@click.option(
    "--ou-cap",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    help="Device assets per OU.",
)
@click.option(
    "--mixed-code",
    type=click.Choice(["0", "99206"]),
    default="0",
    show_default=True,
    help="Top-level code of an answer where some devices failed.",
)
@click.option(
    "--item-errors",
    type=click.Choice(["coded", "minus1"]),
    default="coded",
    show_default=True,
    help="minus1: failed items carry code -1, the message and data null.",
)
@click.option(
    "--check-order",
    type=click.Choice(["exists-first", "room-first"]),
    default="exists-first",
    show_default=True,
    help="Which EnOS checks first for a taken deviceKey in a full product: 11702 or 11739.",
)
@click.option(
    "--private-key-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the demo account's RSA private key (PEM).",
)
def simulator(
    host: str,
    port: int,
    seed_demo: bool,
    state: Path | None,
    fault_spec: str,
    auth: str,
    batch_max: int,
    product_cap: int,
    ou_cap: int,
    mixed_code: str,
    item_errors: str,
    check_order: str,
    private_key_out: Path | None,
) -> None:
    """Run the local EnOS simulator (token service, Connection Service devices and products)."""
    try:
        faults = FaultProfile.parse(fault_spec)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--faults") from exc
    store = Store(state, Limits(batch_max=batch_max, product_cap=product_cap, ou_cap=ou_cap))
    if seed_demo:
        account = store.seed_demo()
        key_path = private_key_out or Path(tempfile.gettempdir()) / "enos-sim-demo-private-key.pem"
        assert account.private_pem is not None
        key_path.write_bytes(account.private_pem)
        key_path.chmod(0o600)
        click.echo(
            f"demo: org {DEMO_ORG}, appKey {DEMO_APP_KEY}, private key in {key_path}", err=True
        )
    config = SimConfig(
        auth=auth,  # type: ignore[arg-type]
        mixed_code=int(mixed_code),
        item_errors=item_errors,  # type: ignore[arg-type]
        check_order=check_order,  # type: ignore[arg-type]
    )
    click.echo(f"EnOS simulator listening on http://{host}:{port}", err=True)
    serve(create_app(store, config, faults), host, port)
