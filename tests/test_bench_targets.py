"""bench.end_to_end's targets: each judged on the right runs, each failing just past its line."""

from __future__ import annotations

from bench.e2e_report import Outcome, Results, passed, section, targets

DEVICES = 100_000


def results(service_s: float = 14.0, ours_s: float = 3.0, postgres_s: float = 2.5) -> Results:
    """Peer at 7,000/s (best of two), SDK 900/s, embedded 5,600/s, two hosts 2x the service."""
    return Results(
        command="python -m bench.end_to_end",
        started="2026-12-01 16:00 UTC",
        load_before="0.10 0.20 0.30",
        machine={
            "cpus": "2",
            "cpu": "x",
            "memory": "1 GiB",
            "os": "Linux",
            "python": "CPython",
            "postgres": "15",
        },
        probe_s=[1.05, 1.05],
        sdk=Outcome("SDK loop", 1, 20_000, 20_000 / 900),
        compared=[
            Outcome("peer", 8, DEVICES, DEVICES / 6_000, cpu_s=2.0, rss_mb=60),
            Outcome("peer", 8, DEVICES, DEVICES / 7_000, cpu_s=2.0, rss_mb=60),
            Outcome(
                "service",
                8,
                DEVICES,
                service_s,
                cpu_s=ours_s,
                postgres_s=postgres_s,
                rss_mb=120,
                cli_wall_s=service_s + 0.5,
                workers="prefork 10",
            ),
            Outcome("service", 8, DEVICES, 2 * service_s, cpu_s=9.0, postgres_s=9.0),
        ],
        embedded=[Outcome("embedded", 8, DEVICES, DEVICES / 5_600, cpu_s=4.0, rss_mb=150)],
        scale_out=[Outcome("service, two hosts", 16, 2 * DEVICES, service_s, workers="2 x")],
    )


def test_every_target_passes_on_its_line() -> None:
    # 7,000 x 0.95 = 6,650/s; 35 and 30 µs per device exactly.
    res = results(service_s=DEVICES / 6_650, ours_s=3.5, postgres_s=3.0)
    assert all(t.ok for t in targets(res)), targets(res)
    assert passed(res)


def test_each_target_fails_past_its_line() -> None:
    slow = {t.name: t.ok for t in targets(results(service_s=DEVICES / 6_600))}
    assert [name for name, ok in slow.items() if not ok] == [
        "service ≥ 95% of the peer, end to end"
    ]
    costly = {t.name: t.ok for t in targets(results(ours_s=3.51, postgres_s=3.01))}
    assert sorted(name for name, ok in costly.items() if not ok) == [
        "PostgreSQL ≤ 30 µs CPU per device (service)",
        "our processes ≤ 35 µs CPU per device (service)",
    ]
    assert not passed(results(ours_s=3.51))


def test_the_section_shows_every_run_and_every_verdict() -> None:
    text = section(results(service_s=DEVICES / 5_000))
    assert text.startswith("## End to end against the strong peer\n")
    assert text.count("| peer | 8 | 100,000 |") == 2
    assert (
        "| service ≥ 95% of the peer, end to end | 5,000/s against 7,000/s: 71% | **FAIL** |"
        in (text)
    )
    assert (
        "| service ≥ 7x the SDK loop, end to end | 5,000/s against 900/s: 5.56x (the peer "
        "itself: 7.78x) | **FAIL** |" in text
    )
