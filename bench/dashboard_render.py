"""Drawing the dashboard's panels with matplotlib: the Grafana grid (24 columns), each time
series panel from its PromQL targets evaluated over the scrapes, each table panel from its SQL
rows. A faithful static rendering of the same panels from the same queries, not Grafana itself."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import promql

ROW_PX = 30  # Grafana's grid row, roughly
BACKGROUND, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"


def legend(template: str, labels: promql.Labels) -> str:
    values = dict(labels)
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: values.get(m[1], ""), template) or "value"


def lines(
    panel: dict[str, Any], series: promql.Series
) -> dict[str, tuple[list[float], list[float]]]:
    drawn: dict[str, tuple[list[float], list[float]]] = {}
    for target in panel["targets"]:
        query = promql.parse(target["expr"])
        for at, _ in series.scrapes:
            for labels, value in promql.evaluate(query, series, at).items():
                name = legend(target.get("legendFormat", ""), labels)
                xs, ys = drawn.setdefault(name, ([], []))
                xs.append(at)
                ys.append(value)
    return drawn


def _cell(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%H:%M:%S")
    text = "" if value is None else str(value)
    return text if len(text) <= 38 else text[:37] + "…"


def draw_table(ax: Any, rows: list[dict[str, Any]]) -> None:
    ax.axis("off")
    if not rows:
        ax.text(0.5, 0.5, "no rows", color=TEXT, ha="center", va="center")
        return
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows[:6]]
    table = ax.table(cellText=cells, colLabels=columns, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(7)
    for (r, _), cell in table.get_celld().items():
        cell.set_facecolor(PANEL if r else GRID)
        cell.set_edgecolor(GRID)
        cell.get_text().set_color(TEXT)
    table.auto_set_column_width(list(range(len(columns))))


def draw_series(ax: Any, panel: dict[str, Any], series: promql.Series) -> None:
    drawn = lines(panel, series)
    for name, (xs, ys) in sorted(drawn.items()):
        ax.plot(xs, ys, label=name, linewidth=1.4)
    ax.set_facecolor(PANEL)
    ax.grid(color=GRID, linewidth=0.6)
    ax.tick_params(colors=TEXT, labelsize=7)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.set_xlabel("seconds since submit", color=TEXT, fontsize=7)
    unit = panel["fieldConfig"]["defaults"].get("unit", "")
    ax.set_ylabel({"ops": "per second", "s": "seconds"}.get(unit, ""), color=TEXT, fontsize=7)
    if drawn:
        ax.legend(fontsize=6, loc="upper left", facecolor=PANEL, labelcolor=TEXT, ncols=3)
    else:
        ax.text(0.5, 0.5, "no data", color=TEXT, ha="center", va="center", transform=ax.transAxes)


def render(
    dashboard: dict[str, Any],
    series: promql.Series,
    tables: dict[str, list[dict[str, Any]]],
    out: Path,
    devices: int,
) -> None:
    panels = dashboard["panels"]
    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(16, rows * ROW_PX / 80), facecolor=BACKGROUND)
    grid = fig.add_gridspec(rows, 24, hspace=0.1, wspace=0.1, top=0.97, bottom=0.01)
    for panel in panels:
        pos = panel["gridPos"]
        cell = grid[pos["y"] + 1 : pos["y"] + pos["h"] - 1, pos["x"] + 1 : pos["x"] + pos["w"] - 1]
        ax = fig.add_subplot(cell)
        ax.set_title(panel["title"], color=TEXT, fontsize=9, loc="left")
        if panel["type"] == "table":
            draw_table(ax, tables.get(panel["title"], []))
        else:
            draw_series(ax, panel, series)
    fig.suptitle(
        f"{dashboard['title']} — {devices:,} devices imported against the simulator with faults "
        "(a static rendering of the Grafana dashboard's panels and queries, bench/dashboard.py)",
        color=TEXT,
        fontsize=10,
        y=0.995,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=BACKGROUND, bbox_inches="tight")
    plt.close(fig)
