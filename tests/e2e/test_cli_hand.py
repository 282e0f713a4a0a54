"""The command line as a person uses it: whole job ids on screen, unique prefixes accepted,
``--json``, data that looks like rich markup printed as itself, and log lines above the live
progress bar at a terminal (per-chunk lines only with ``-v``)."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import time
import uuid
from pathlib import Path

from sqlalchemy import insert

from tests.e2e.services import Simulator, job_id_from, process_env
from tests.harness.processes import BIN, run_cli
from worker.db.migrate import upgrade
from worker.db.models import JOBS
from worker.db.session import Database
from worker.db.views import JOB_STATUS_COLUMNS

LONG_SOURCE = "/srv/inbox/o-demo/" + "a-very-long-folder-name/" * 6 + "devices.csv"


def _jobs_db(workdir: Path, ids: list[str]) -> tuple[str, dict[str, str]]:
    url = f"sqlite:///{workdir / 'jobs.db'}"
    upgrade(url)
    db = Database(url)
    with db.begin() as session:
        for n, job_id in enumerate(ids):
            session.execute(
                insert(JOBS).values(
                    id=job_id, status="running" if n == 1 else "completed", org_id="o-demo",
                    source=LONG_SOURCE, total=0,
                    last_error=f"column [/x] number {n}" if n else None,
                )
            )  # fmt: skip
    db.dispose()
    return url, process_env("http://127.0.0.1:9", url)


def test_job_ids_whole_prefixes_and_json(workdir: Path) -> None:
    twins = ["29409691-303d-4f9b-a5f0-09aaaaaaaaaa", "29409691-303d-4f9b-a5f0-09bbbbbbbbbb"]
    single = str(uuid.uuid4())
    _, env = _jobs_db(workdir, [single, *twins])

    listed = run_cli(["status"], env, workdir, timeout_s=30)
    assert listed.returncode == 0, listed.stderr
    for job_id in (single, *twins):
        assert job_id in listed.stdout, listed.stdout  # never cut short

    shown = run_cli(["status", single[:6]], env, workdir, timeout_s=30)
    assert shown.returncode == 0, shown.stderr
    assert f"job {single}" in shown.stdout

    short = run_cli(["status", single[:5]], env, workdir, timeout_s=30)
    assert short.returncode == 1 and "at least 6 characters" in short.stderr

    ambiguous = run_cli(["results", "29409691-303d"], env, workdir, timeout_s=30)
    assert ambiguous.returncode == 1
    assert "ambiguous" in ambiguous.stderr and twins[0] in ambiguous.stderr

    one = run_cli(["status", twins[1][:30], "--json"], env, workdir, timeout_s=30)
    assert one.returncode == 0, one.stderr
    row = json.loads(one.stdout)
    assert list(row) == list(JOB_STATUS_COLUMNS)
    assert row["job_id"] == twins[1] and row["last_error"] == "column [/x] number 2"

    every = run_cli(["status", "--json"], env, workdir, timeout_s=30)
    rows = json.loads(every.stdout)
    assert sorted(r["job_id"] for r in rows) == sorted([single, *twins])

    # Text from the data is never rich markup: "[/x]" prints as itself.
    cancelled = run_cli(["cancel", twins[0]], env, workdir, timeout_s=30)
    assert cancelled.returncode in (0, 5), cancelled.stderr
    assert "[/x]" in cancelled.stderr and "MarkupError" not in cancelled.stderr


def test_markup_in_a_csv_header_ends_with_the_jobs_status(
    simulator: Simulator, workdir: Path
) -> None:
    path = workdir / "devices.csv"
    path.write_text("productKey,deviceKey,deviceName,timezone,[/x]\npk-meter,k-000001,m,+08:00,1\n")
    env = process_env(simulator.url, f"sqlite:///{workdir / 'run.db'}")
    done = run_cli(["run", str(path), "--org", "o-demo"], env, workdir, timeout_s=60)
    assert "MarkupError" not in done.stderr, done.stderr
    assert done.returncode in (1, 4), done.stderr
    assert "[/x]" in done.stderr, done.stderr


def _run_at_a_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str]:
    """Runs with stderr on a pseudo-terminal (stdout a pipe); returns the exit and the screen."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        argv, env={**env, "COLUMNS": "120", "TERM": "xterm"}, cwd=cwd,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower,
        start_new_session=True,
    )  # fmt: skip
    os.close(follower)
    screen = bytearray()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:
                break
            if not chunk:
                break
            screen += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    code = proc.wait(timeout=30)
    assert proc.stdout is not None
    proc.stdout.close()
    return code, screen.decode(errors="replace")


def test_logs_print_above_the_bar_and_chunk_lines_need_v(
    simulator: Simulator, workdir: Path
) -> None:
    path = workdir / "devices.csv"
    lines = [f"pk-meter,t-{n:06d},m {n},+08:00" for n in range(60)]
    path.write_text("productKey,deviceKey,deviceName,timezone\n" + "\n".join(lines) + "\n")
    env = process_env(simulator.url, f"sqlite:///{workdir / 'tty.db'}")
    env.update(ENOS_IMPORT_BATCH_SIZE="10", ENOS_IMPORT_LOG_FORMAT="auto")
    run = [str(BIN / "enos-import"), "run", str(path), "--org", "o-demo"]

    code, quiet = _run_at_a_terminal(run, env, workdir)
    assert code == 0, quiet
    assert "chunk.sent" not in quiet
    assert "60/60 devices" in quiet  # the bar itself was drawn

    again = {**env, "ENOS_IMPORT_DATABASE_URL": f"sqlite:///{workdir / 'tty2.db'}"}
    code, loud = _run_at_a_terminal([*run, "-v"], again, workdir)
    assert code == 0, loud
    logged = [line for line in loud.splitlines() if "chunk.sent" in line]
    assert len(logged) >= 6, loud
    # Each log line is a line of its own: no piece of the bar is written into it.
    assert not [line for line in logged if "━" in line or "devices" in line.split("chunk")[0]]


def test_submit_job_id_is_the_first_line(simulator: Simulator, workdir: Path) -> None:
    """The job id printed by ``run`` is whole (36 characters), the first line of stdout."""
    path = workdir / "one.csv"
    path.write_text("productKey,deviceKey,deviceName,timezone\npk-meter,one-0001,m,+08:00\n")
    env = process_env(simulator.url, f"sqlite:///{workdir / 'one.db'}")
    done = run_cli(["run", str(path), "--org", "o-demo"], env, workdir, timeout_s=60)
    assert done.returncode == 0, done.stderr
    assert len(job_id_from(done.stdout, done.stderr)) == 36
