"""Samplers that run beside a job: peak RSS of our processes, and calls in flight."""

from __future__ import annotations

import contextlib
import threading

from bench.throughput.procfs import ppids, status_kb, tree


class PeakRss:
    """Samples ``VmHWM`` of the tracked process trees every second and at the end of each job,
    keeps each pid's peak with a label (``worker``, ``worker child``, ``beat``, ``cli``). The
    high-water mark is kept by the kernel, so only a process that exits between two samples
    could be missed (the CLI's comes from ``wait4`` instead)."""

    def __init__(self) -> None:
        self.roots: dict[str, int] = {}
        self.peaks: dict[int, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def track(self, label: str, pid: int) -> None:
        with self._lock:
            self.roots[label] = pid

    def untrack(self, label: str) -> None:
        self.sample()
        with self._lock:
            self.roots.pop(label, None)

    def record(self, label: str, pid: int, kb: int) -> None:
        with self._lock:
            old = self.peaks.get(pid, (label, 0))[1]
            self.peaks[pid] = (label, max(old, kb))

    def sample(self) -> None:
        with self._lock:
            roots = dict(self.roots)
        parents = ppids()
        for label, root in roots.items():
            for pid in tree(root, parents):
                kb = status_kb(pid, "VmHWM")
                if kb is not None:
                    self.record(label if pid == root else f"{label} child", pid, kb)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sample()

    def by_label(self) -> dict[str, list[float]]:
        """Peak RSS in MB of every process seen, grouped by label."""
        out: dict[str, list[float]] = {}
        with self._lock:
            for label, kb in self.peaks.values():
                out.setdefault(label, []).append(kb / 1024)
        return {label: sorted(values, reverse=True) for label, values in sorted(out.items())}

    def reset(self) -> None:
        with self._lock:
            self.peaks.clear()


class InFlight:
    """The most batchCreate calls held at once in the shared rate budget (the ZCARD of its
    holders in Redis), sampled every 20 ms while a job runs."""

    def __init__(self, redis_url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(redis_url, socket_timeout=5)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="in-flight", daemon=True)

    def __enter__(self) -> InFlight:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._redis.close()

    def _run(self) -> None:
        keys: list[bytes] = []
        while not self._stop.wait(0.02):
            with contextlib.suppress(Exception):
                if not keys:
                    keys = list(self._redis.scan_iter("enos-import:budget:*:holders"))
                for key in keys:
                    self.peak = max(self.peak, int(self._redis.zcard(key)))
