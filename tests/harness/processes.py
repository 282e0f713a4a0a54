"""Real processes for the end-to-end tests, the fault suite and the benchmarks.

Each process runs in its own session (so a stop reaches its children too), writes its output to
a file (shown when a wait fails), and is always stopped with its process group and a bounded
wait. ``free_port`` and ``wait_until`` are the one free-port helper and the one bounded wait.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from worker.host import free_port as free_port  # the one helper, shared with the demo

ROOT = Path(__file__).resolve().parents[2]
# The environment this runs in (.venv, or a second one such as .venv-311).
BIN = Path(sys.executable).parent
T = TypeVar("T")


class ProcessExited(RuntimeError):
    """A process that should be running has ended."""


def listening(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def base_env() -> dict[str, str]:
    """This environment without any ``ENOS_IMPORT_*`` setting (a process gets only the settings
    it is given), and with no proxy in the way of loopback traffic."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("ENOS_IMPORT_") and "proxy" not in name.lower()
    }
    env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


@dataclass
class Proc:
    """A process we start (again after a stop, if need be); its output goes to ``log``."""

    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log: Path
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so stop() reaches its children
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was never started"
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise ProcessExited(
                f"{self.name} exited with status {self.popen.returncode}; its output:\n"
                f"{self.tail()}"
            )

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:]) or "(no output)"

    def children(self) -> list[int]:
        """Direct children (Celery's prefork pool processes)."""
        try:
            text = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill(self, signum: int = signal.SIGKILL) -> None:
        """``signum`` to the whole process group, then reap (bounded)."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``grace_s``, then reap; never hangs."""
        if self.popen is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(grace_s)
        # Prefork children share the group: whatever is left of it goes now.
        self.kill()


def start(name: str, argv: Sequence[str], env: dict[str, str], cwd: Path) -> Proc:
    """Starts ``argv`` in ``cwd``, its output in ``cwd/NAME.log``."""
    return Proc(name, list(argv), env, cwd, cwd / f"{name}.log").start()


def diagnostics(procs: Sequence[Proc]) -> str:
    return "\n".join(f"--- {p.name} (last lines) ---\n{p.tail()}" for p in procs)


def wait_until(
    probe: Callable[[], T | None],
    what: str,
    timeout_s: float,
    watched: Sequence[Proc] = (),
    interval_s: float = 0.2,
    shown: Sequence[Proc] = (),
) -> T:
    """Polls ``probe`` until it returns something truthy (an exception counts as not yet).
    Raises ``TimeoutError`` with the output of the processes (``watched`` and ``shown``) once
    ``timeout_s`` passed, and ``ProcessExited`` as soon as a watched one dies."""
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        for proc in watched:
            proc.check_alive()
        try:
            value = probe()
        except Exception as exc:
            last, value = exc, None
        if value:
            return value
        if time.monotonic() > deadline:
            cause = f" (last error: {last!r})" if last is not None else ""
            raise TimeoutError(
                f"timed out after {timeout_s:.0f} s waiting for {what}{cause}\n"
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
    argv = [str(BIN / "enos-import"), *args]
    with out_path.open("wb") as out, err_path.open("wb") as err:
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
    proc = Proc(name, argv, env, cwd, err_path, popen)
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
