"""`python -m bench.invalidation` end to end: every change reaches the other cache, and
the report is written. Checks the harness, never the timings."""

from __future__ import annotations

from pathlib import Path

import orjson

from bench import invalidation


def test_every_change_reaches_the_other_cache_and_is_reported(tmp_path: Path) -> None:
    results = invalidation.run(samples=20, profile_name="test", results_dir=tmp_path)
    assert results["samples"] == 20
    assert 0 < results["p50_ms"] <= results["p95_ms"] <= results["p99_ms"] <= results["max_ms"]
    written = orjson.loads((tmp_path / "invalidation.json").read_bytes())
    assert written["samples"] == 20 and written["command"].endswith("--profile=test")
    assert "| 20 |" in (tmp_path / "invalidation.md").read_text()
