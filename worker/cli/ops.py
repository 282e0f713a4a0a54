"""Operating the service: ``enos-import health`` and ``enos-import metrics serve``."""

from __future__ import annotations

import json
import sys
import time

import click
from rich.text import Text

from worker.cli.common import EXIT_ERROR, EXIT_OK, open_database, settings_from, stderr


@click.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
@click.option("--enos", is_flag=True, help="Also get a token from EnOS with the account.")
def health(as_json: bool, enos: bool) -> None:
    """Check the database (at the migrations' head), the broker, a worker consuming the queue
    and a recent sweep; exit 0 when all pass, 1 otherwise (a Kubernetes probe)."""
    from worker.health import run_checks

    report = run_checks(settings_from(), enos=enos)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for check in report.checks:
            mark = Text("ok  ", style="green") if check.ok else Text("FAIL", style="red")
            stderr.print(mark, Text(f"{check.name:<9}"), Text(check.detail))
    sys.exit(EXIT_OK if report.ok else EXIT_ERROR)


@click.group()
def metrics() -> None:
    """Prometheus metrics read from the database."""


@metrics.command()
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    help="Port to serve /metrics on [env ENOS_IMPORT_METRICS_PORT].",
)
@click.option("--address", default="0.0.0.0", show_default=True, help="Address to listen on.")
def serve(port: int | None, address: str) -> None:
    """Serve the database's gauges (jobs by state, pending rows, lag, last sweep) until stopped.
    Run one such process for the whole service."""
    from prometheus_client import CollectorRegistry, start_http_server

    from worker.dbmetrics import DatabaseCollector

    settings = settings_from(metrics_port=port)
    if not settings.metrics_port:
        raise click.UsageError("--port (or ENOS_IMPORT_METRICS_PORT) is required")
    registry = CollectorRegistry()
    registry.register(DatabaseCollector(open_database(settings)))
    server, thread = start_http_server(settings.metrics_port, addr=address, registry=registry)
    stderr.print(f"serving /metrics on {address}:{settings.metrics_port}", highlight=False)
    try:
        while thread.is_alive():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
