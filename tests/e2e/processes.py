"""Real processes for the end-to-end tests: started in their own session, output to files, and
always stopped by their process group with a bounded wait."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / ".venv" / "bin"
T = TypeVar("T")


@dataclass
class Proc:
    """A process we started; its stdout and stderr go to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def check_alive(self) -> None:
        code = self.popen.poll()
        if code is not None:
            pytest.fail(f"{self.name} exited with status {code}; its output:\n{self.tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``, then reap; never hangs."""
        _signal_group(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        # Prefork children share the group: whatever is left of it goes now.
        _signal_group(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def start(name: str, argv: Sequence[str], env: dict[str, str], cwd: Path) -> Proc:
    log = cwd / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            list(argv),
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so stop() reaches its children
        )
    return Proc(name, popen, log)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def diagnostics(watched: Sequence[Proc]) -> str:
    return "\n".join(f"--- {p.name} (last lines) ---\n{p.tail()}" for p in watched)


def wait_until(
    probe: Callable[[], T | None],
    what: str,
    timeout_s: float,
    watched: Sequence[Proc] = (),
    interval_s: float = 0.2,
    shown: Sequence[Proc] = (),
) -> T:
    """Polls ``probe`` until it returns something truthy; fails with the output of the
    processes (``watched`` and ``shown``) if ``timeout_s`` passes or a watched one dies first."""
    deadline = time.monotonic() + timeout_s
    while True:
        for proc in watched:
            proc.check_alive()
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(
                f"timed out after {timeout_s:.0f} s waiting for {what}\n"
                f"{diagnostics([*shown, *watched])}"
            )
        time.sleep(interval_s)


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str


def run_cli(
    args: Sequence[str],
    env: dict[str, str],
    cwd: Path,
    timeout_s: float,
    watched: Sequence[Proc] = (),
) -> Finished:
    """Runs ``enos-import ARGS`` to its end (bounded), failing early if a watched process dies."""
    name = f"cli-{args[0]}-{time.monotonic_ns()}"
    out_path, err_path = cwd / f"{name}.out", cwd / f"{name}.err"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        popen = subprocess.Popen(
            [str(BIN / "enos-import"), *args],
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    proc = Proc(name, popen, err_path)
    try:
        wait_until(
            lambda: popen.poll() is not None,
            f"`enos-import {' '.join(args)}` to end",
            timeout_s,
            watched,
            shown=[proc],
        )
    finally:
        proc.stop(grace_s=2)
    return Finished(popen.returncode, out_path.read_text(), err_path.read_text())
