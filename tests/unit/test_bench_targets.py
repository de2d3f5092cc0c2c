"""Every read's p50 target holds at one connection too; throughput targets name
PostGraphile only where it serves the scenario; session resolution names its PING."""

from __future__ import annotations

from bench import checks
from bench.harness import Options

SESSION = {"count": 1, "p50_ms": 0.1, "p99_ms": 0.2}


def test_a_read_at_one_connection_gets_its_p50_target_and_no_peer_row() -> None:
    gateway = {"p50_ms": 3.0, "rps": 300.0, "cpu_s_per_1k": 3.0}
    floor = {"p50_ms": 2.5, "rps": 400.0, "cpu_s_per_1k": 2.5}
    scenarios = {"S3 @1": {"gateway": gateway, "floor": floor}}
    ratios = checks._ratios(scenarios)
    targets = {t["target"]: t for t in checks._targets(scenarios, ratios, SESSION, None)}
    single = targets["S3 @1 p50 within 1.5x of the floor"]
    assert single["met"] is True and single["result"] == "1.20x"
    assert not [name for name in targets if name.startswith("S3 @1 throughput")]
    assert targets["S1 throughput at least PostGraphile's"]["result"] == "peer not run"


def test_the_bench_measures_every_read_with_a_target_at_one_connection() -> None:
    assert set(Options().single) == set(checks.READS)


def test_session_resolution_names_the_ping_timed_beside_it() -> None:
    timed = {**SESSION, "ping_p50_ms": 0.05, "ping_p99_ms": 0.15}
    targets = {t["target"]: t for t in checks._targets({}, {}, timed, None)}
    session = targets["S6 session resolution under 1 ms p99 inside the gateway"]
    assert session["met"] is True
    assert session["result"] == (
        "p50 0.1 ms, p99 0.2 ms over 1 lookups; a PING beside them p50 0.05 ms, p99 0.15 ms"
    )
