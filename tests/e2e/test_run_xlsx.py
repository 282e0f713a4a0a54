"""``enos-import run`` on a workbook with the demo CSV's rows gives every device the status the
CSV gives it, on a real simulator."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.e2e.services import Simulator, job_id_from, outcomes, process_env
from tests.harness.processes import run_cli
from tests.readers.xlsx_files import workbook_from_csv
from worker.db.session import Database

EXAMPLE = Path(__file__).parents[2] / "examples" / "devices.csv"


def _import(simulator: Simulator, workdir: Path, path: Path, name: str) -> dict[int, str]:
    url = f"sqlite:///{workdir / f'{name}.db'}"
    done = run_cli(["run", str(path), "--org", "o-demo"], process_env(simulator.url, url),
                   workdir, timeout_s=180, watched=[simulator.proc])  # fmt: skip
    assert done.returncode == 3, done.stderr  # the demo file has wrong rows on purpose
    db = Database(url)
    try:
        rows = outcomes(db, job_id_from(done.stdout, done.stderr))
    finally:
        db.dispose()
    return {line: str(row["status"]) for line, row in rows.items()}


def test_a_workbook_gives_the_csv_statuses(simulator: Simulator, workdir: Path) -> None:
    from_csv = _import(simulator, workdir, EXAMPLE, "csv")
    created = len(simulator.devices())
    httpx.post(f"{simulator.url}/__sim/reset").raise_for_status()
    book = workbook_from_csv(EXAMPLE, workdir / "devices.xlsx")
    from_xlsx = _import(simulator, workdir, book, "xlsx")

    assert len(from_csv) == 3000
    assert from_xlsx == from_csv
    assert sorted(set(from_csv.values())) == ["created", "invalid"]
    assert len(simulator.devices()) == created == list(from_csv.values()).count("created")
