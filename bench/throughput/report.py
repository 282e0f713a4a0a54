"""The benchmark's section of docs/benchmarks.md, its verdict against the targets, and the
line printed per job."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import create_engine, text

from bench.common import code_version, machine
from bench.throughput.calls import SdkRun
from bench.throughput.config import (
    BATCH,
    BOUND_FRACTION,
    CAP,
    CONCURRENCY,
    CPU_US_PER_DEVICE,
    FAULTS,
    ORG,
    RSS_LIMIT_MB,
    SDK_FACTOR,
    SECTION,
)
from bench.throughput.jobs import (
    JobRun,
)

# Kept by hand in docs/benchmarks.md: what the figures cannot say by themselves, and earlier runs.
NOTES_POINTER = (
    "What these figures cannot say by themselves, and earlier measurements: the next section, "
    "*Import throughput: notes*."
)


def machine_with_postgres(admin_url: str) -> dict[str, str]:
    info = machine()
    engine = create_engine(admin_url)
    try:
        with engine.connect() as conn:
            info["postgres"] = str(conn.execute(text("SHOW server_version")).scalar())
    finally:
        engine.dispose()
    return info


def verdict(ok: bool) -> str:
    return "**pass**" if ok else "**FAIL**"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


@dataclass
class Results:
    command: str
    probe_s: list[float]
    sdk: SdkRun
    runs: list[JobRun]
    memory: JobRun | None
    started: str
    machine: dict[str, str]  # machine_with_postgres()

    @property
    def call_s(self) -> float:
        return mean(self.probe_s)

    @property
    def bound(self) -> float:
        return CONCURRENCY * BATCH / self.call_s


def section(res: Results) -> str:
    """The benchmark's section of docs/benchmarks.md."""
    every = [*res.runs, *([res.memory] if res.memory else [])]
    lines = [*_intro(res), *_throughput(res, every), *_cpu(every), *_targets(res)]
    if res.memory is not None:
        lines += _memory(res.memory)
    if res.runs:
        lines += _peaks(res.runs)
    lines += ["", NOTES_POINTER, ""]
    return "\n".join(lines)


def _intro(res: Results) -> list[str]:
    info, bound, sdk = res.machine, res.bound, res.sdk.devices_per_s
    lines = [
        SECTION,
        "",
        f"Measured {res.started} on code {code_version()} by `{res.command}` (part of "
        "`make bench`; about five minutes).",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} RAM, {info['os']}, "
        f"{info['python']}, PostgreSQL {info['postgres']}; everything on loopback. The machine "
        "is shared: the 1-minute load average just before each job, and the CPUs other work kept "
        "busy during it (the machine's busy time from `/proc/stat` minus every process measured "
        "here), are in the table; other work inflates the CPU figures and lowers the rates. So "
        "does a slower CPU: this is a virtual machine whose neighbours are invisible from "
        "inside, so each job also records *reference ms*, the CPU time of a fixed piece of "
        "Python work (JSON and dicts of 1,000 devices) just before it; the simulator's own CPU "
        "per device, the same work every run, is a second witness.",
        "",
        "Set-up: a fresh PostgreSQL database `enos_import_bench` (`enos-import db upgrade`), Redis "
        "database 12 as the broker (flushed before each set of workers), `enos-import simulator "
        f'--seed-demo --faults "{FAULTS}" --product-cap {CAP} --ou-cap {CAP}` (a 1,000-device '
        "call waits 0.5 s + 1,000 x 0.5 ms), `celery -A worker.celery_app worker --pool <pool> "
        "--concurrency <processes>` and `celery -A worker.celery_app beat`, default settings "
        f"otherwise: batch {BATCH:,}, `ENOS_IMPORT_MAX_CONCURRENCY` {CONCURRENCY} (the shared "
        "rate budget never lets more than 8 calls be in flight, however many processes there "
        f"are; the most seen at once is in the table), window {2 * CONCURRENCY}. Each job is a "
        "CSV of three products (deviceKey, a name with a zh_CN translation, timezone, "
        "description, two attributes, two tags) given to `enos-import submit FILE --org "
        f"{ORG} --wait`. Before each timed job a warm-up job (at least two chunks per worker "
        "process) runs on the same workers and is not counted; the memory run starts fresh "
        "workers and has no warm-up. Subprocesses run with Python's bytecode cache on, as an "
        "installed service has it (`deploy/Dockerfile` compiles at install time).",
        "",
        "How it is measured. Times are the database's: *end to end* is the job's `created_at` → "
        "`finished_at` (reading the file included); *intake* is `created_at` → the first chunk "
        "claimed; *sending* is the first claim → `finished_at`; *sustained* is the rate while "
        "every call slot is busy (between the 8th and the 8th-to-last chunk to finish; a "
        "100-chunk job needs 13 rounds of 8 calls, so even a perfect sender spends its last "
        "round half idle and its *sending* rate tops out near 96% of the bound). CPU is user + "
        "system time from `/proc/<pid>/stat` over the job (reaped children included): the "
        "worker's process tree (prefork parent and children), beat, and the CLI for its whole "
        "life, interpreter start-up included (from `wait4`); PostgreSQL is the process tree of "
        "the server used (the machine's on 127.0.0.1:5432, or a private one where none listens; "
        "other databases' work on it at the same time would count too), Redis likewise. Peak "
        "RSS is `VmHWM` of each process (the kernel's high-water mark), "
        "read every second and at the end of each job (the CLI: `ru_maxrss`).",
        "",
        "Call time of one 1,000-device batchCreate, sequential from the bench with the "
        f"service's client: {', '.join(f'{t:.3f}' for t in res.probe_s)} s (mean "
        f"{res.call_s:.3f} s), so the bound is {CONCURRENCY} x {BATCH:,} / {res.call_s:.3f} s "
        f"= **{bound:,.0f} devices/s**, and 90% of it {BOUND_FRACTION * bound:,.0f}/s. The "
        "workers' own measure of each call during the jobs (`call_s` of `chunk.sent`) is in "
        "the table.",
        "",
        f"Official SDK baseline: `poseidon.urlopen` (`enos-poseidon`) calling batchCreate "
        f"{res.sdk.calls} times in a plain loop, {BATCH:,} devices a call: {res.sdk.wall_s:.2f} "
        f"s, **{sdk:,.0f} devices/s** (mean call {mean(res.sdk.call_s):.3f} s); 5x is "
        f"{SDK_FACTOR * sdk:,.0f}/s.",
        "",
    ]
    return lines


def _throughput(res: Results, every: list[JobRun]) -> list[str]:
    bound, sdk = res.bound, res.sdk.devices_per_s
    lines = [
        "Throughput:",
        "",
        "| job | workers | devices | end to end s | intake s | sending s | end to end /s "
        "| sending /s | sustained /s | sending % of bound | sustained % of bound "
        "| sending x SDK | calls in flight (max) | call s in the run | load before "
        "| other work (CPUs) | reference ms |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in every:
        calls = f"{mean(r.call_s):.3f}" if r.call_s else "-"
        versus = (
            f"| {100 * r.send_rate / bound:.1f}% | {100 * r.sustained_rate / bound:.1f}% "
            f"| {r.send_rate / sdk:.1f}"
            if r is not res.memory
            else "| - | - | - "  # no latency: the bound and the SDK loop do not apply
        )
        lines.append(
            f"| {r.label} | {r.pool} | {r.devices:,} | {r.e2e_s:.1f} | {r.intake_s:.1f} "
            f"| {r.send_s:.1f} | {r.e2e_rate:,.0f} | {r.send_rate:,.0f} | {r.sustained_rate:,.0f} "
            f"{versus} | {r.in_flight} | {calls} | {r.load_before} | {r.other_cores:.2f} "
            f"| {r.reference_ms:.0f} |"
        )
    return lines


def _cpu(every: list[JobRun]) -> list[str]:
    lines: list[str] = []
    lines += [
        "",
        "CPU per device (µs) and memory:",
        "",
        "| job | workers | workers | beat | CLI | **ours** | PostgreSQL | simulator | Redis "
        "| CLI CPU s | largest RSS of ours MB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in every:
        lines.append(
            f"| {r.label} | {r.pool} | {r.us(r.cpu.worker):.1f} | {r.us(r.cpu.beat):.1f} "
            f"| {r.us(r.cli_cpu_s):.1f} | **{r.us(r.ours_cpu_s):.1f}** "
            f"| {r.us(r.cpu.postgres):.1f} | {r.us(r.cpu.simulator):.1f} "
            f"| {r.us(r.cpu.redis):.1f} | {r.cli_cpu_s:.2f} | {r.max_rss_mb:.0f} |"
        )
    return lines


def _targets(res: Results) -> list[str]:
    bound, sdk = res.bound, res.sdk.devices_per_s
    lines: list[str] = []
    lines += [
        "",
        "Against DESIGN's targets (each set-up's best job; every job is in the tables above):",
        "",
        "| target | workers | measured | result |",
        "|---|---|---|---|",
    ]
    for b in best_runs(res.runs):
        r, e, c = b.sending, b.end_to_end, b.cheapest
        lines += [
            f"| throughput ≥ 90% of the bound ({BOUND_FRACTION * bound:,.0f}/s) while sending "
            f"| {b.pool} | {r.send_rate:,.0f}/s, {100 * r.send_rate / bound:.1f}% (sustained "
            f"{100 * r.sustained_rate / bound:.1f}%; job {r.label}) "
            f"| {verdict(r.send_rate >= BOUND_FRACTION * bound)} |",
            f"| the same, end to end (the intake before the first call included) | {b.pool} "
            f"| {e.e2e_rate:,.0f}/s, {100 * e.e2e_rate / bound:.1f}% (job {e.label}) "
            f"| {verdict(e.e2e_rate >= BOUND_FRACTION * bound)} |",
            f"| ≥ 5x the SDK loop ({SDK_FACTOR * sdk:,.0f}/s) | {b.pool} "
            f"| {r.send_rate / sdk:.1f}x sending, {e.e2e_rate / sdk:.1f}x end to end "
            f"| {verdict(e.e2e_rate >= SDK_FACTOR * sdk)} |",
            f"| ≤ {CPU_US_PER_DEVICE:.0f} µs CPU per device in our processes, persistence "
            f"included | {b.pool} | {c.us(c.ours_cpu_s):.1f} µs (PostgreSQL beside it: "
            f"{c.us(c.cpu.postgres):.1f} µs; job {c.label}) "
            f"| {verdict(c.us(c.ours_cpu_s) <= CPU_US_PER_DEVICE)} |",
        ]
    return lines


def _memory(m: JobRun) -> list[str]:
    lines: list[str] = []
    lines += [
        f"| ≤ {CPU_US_PER_DEVICE:.0f} µs CPU per device, {m.devices:,}-device run "
        f"| {m.pool} | {m.us(m.ours_cpu_s):.1f} µs (PostgreSQL {m.us(m.cpu.postgres):.1f} µs) "
        f"| {verdict(m.us(m.ours_cpu_s) <= CPU_US_PER_DEVICE)} |",
        f"| every process < {RSS_LIMIT_MB:.0f} MB resident importing {m.devices:,} devices "
        f"| {m.pool} | largest {m.max_rss_mb:.0f} MB "
        f"| {verdict(m.max_rss_mb < RSS_LIMIT_MB)} |",
        "",
        f"Memory run: {m.devices:,} devices in one CSV file ({m.file_mb:,.0f} MB), the "
        "simulator's latency set to 0 "
        "(`POST /__sim/faults {}`) so that it takes minutes rather than two hours, "
        f"{m.pool} workers started for it: submit to end {m.wall_s:.0f} s. Peak RSS of "
        "every process (MB):",
        "",
        "| process | peak RSS MB |",
        "|---|--:|",
        f"| CLI (`enos-import submit --wait`) | {m.cli_rss_mb:.0f} |",
    ]
    for label, values in m.rss.items():
        lines.append(f"| {label} ({len(values)}) | {', '.join(f'{v:.0f}' for v in values)} |")
    lines.append(
        f"| simulator (stands in for EnOS, not ours; holds every device of every run) "
        f"| {m.sim_rss_mb:.0f} |"
    )
    return lines


def _peaks(runs: list[JobRun]) -> list[str]:
    lines: list[str] = []
    lines += ["", "Peak RSS during the timed jobs (MB, the largest of each kind):", ""]
    for pool in dict.fromkeys(r.pool for r in runs):
        group = [r for r in runs if r.pool == pool]
        peaks: dict[str, float] = {"CLI": max(r.cli_rss_mb for r in group)}
        for r in group:
            for label, values in r.rss.items():
                peaks[label] = max(peaks.get(label, 0.0), *values)
        lines.append(f"- {pool}: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) + ".")
    return lines
    return "\n".join(lines)


def print_run(r: JobRun, bound: float, sdk: float) -> None:
    print(
        f"{r.label:>12} {r.pool:10} {r.devices:>9,} devices: end to end {r.e2e_s:6.2f} s "
        f"({r.e2e_rate:,.0f}/s), intake {r.intake_s:.2f} s, sending {r.send_s:.2f} s "
        f"({r.send_rate:,.0f}/s = {100 * r.send_rate / bound:.1f}% of bound, "
        f"{r.send_rate / sdk:.1f}x SDK), sustained {r.sustained_rate:,.0f}/s = "
        f"{100 * r.sustained_rate / bound:.1f}%; CPU µs/device: workers {r.us(r.cpu.worker):.1f}, "
        f"beat {r.us(r.cpu.beat):.1f}, CLI {r.us(r.cli_cpu_s):.1f} → ours "
        f"{r.us(r.ours_cpu_s):.1f}; postgres {r.us(r.cpu.postgres):.1f}, simulator "
        f"{r.us(r.cpu.simulator):.1f}, redis {r.us(r.cpu.redis):.1f}; peak RSS "
        f"{r.max_rss_mb:.0f} MB (CLI {r.cli_rss_mb:.0f})"
        + (f"; in-run call {mean(r.call_s):.3f} s" if r.call_s else "")
        + f"; other work {r.other_cores:.2f} CPUs, {r.in_flight} calls in flight at most"
        + f"; reference {r.reference_ms:.0f} ms",
        flush=True,
    )


@dataclass
class Best:
    """A worker set-up's best jobs: the fastest (sending and end to end) and the cheapest."""

    pool: str
    sending: JobRun
    end_to_end: JobRun
    cheapest: JobRun


def best_runs(runs: list[JobRun]) -> list[Best]:
    out = []
    for pool in dict.fromkeys(r.pool for r in runs):
        group = [r for r in runs if r.pool == pool]
        out.append(
            Best(
                pool,
                max(group, key=lambda r: r.send_rate),
                max(group, key=lambda r: r.e2e_rate),
                min(group, key=lambda r: r.us(r.ours_cpu_s)),
            )
        )
    return out


def met(res: Results) -> bool:
    """Exit status 0: some timed set-up met the throughput (sending), SDK and CPU targets, and
    the memory run (when there was one) kept every process under the limit."""
    bound, sdk = res.bound, res.sdk.devices_per_s
    timed = not res.runs or any(
        b.sending.send_rate >= BOUND_FRACTION * bound
        and b.end_to_end.e2e_rate >= SDK_FACTOR * sdk
        and b.cheapest.us(b.cheapest.ours_cpu_s) <= CPU_US_PER_DEVICE
        for b in best_runs(res.runs)
    )
    return timed and (res.memory is None or res.memory.max_rss_mb < RSS_LIMIT_MB)
