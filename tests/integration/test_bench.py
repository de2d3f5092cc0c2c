"""`polygraph bench --quick` end to end: the harness works and writes valid reports,
scenarios and the search stage alike.

Checks the harness, never the timings. Runs on the bench stack (its own ports and
data, started here when it is down), without the PostGraphile peer: quick mode
leaves it out, so this test needs no Node and stays fast.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from bench import report
from bench.checks import STORES
from bench.harness import Options, run
from bench.scenarios import SCENARIOS

FIELDS = {
    "rps", "p50_ms", "p95_ms", "p99_ms", "errors", "round_trips", "cpu_s", "cpu_s_per_1k",
    "rss_mb", "rounds",
}  # fmt: skip


def test_quick_bench_writes_json_and_markdown(tmp_path: Path) -> None:
    path = run(Options.quick_mode(), results_dir=tmp_path)

    results = orjson.loads(path.read_bytes())
    assert (tmp_path / "latest.json").read_bytes() == path.read_bytes()
    assert {"machine", "versions", "command", "scenarios"} <= results.keys()
    assert results["command"].startswith("polygraph bench --quick")
    assert results["machine"]["cores"] >= 1
    assert results["versions"]["postgresql"]

    # Every scenario either ran or is listed as skipped with a reason.
    ran, skipped = set(results["scenarios"]), set(results["skipped"])
    assert ran | skipped == {s.name for s in SCENARIOS}
    assert not ran & skipped
    assert {"S1", "S2", "S2-pg", "S3", "S5", "S6", "S8"} <= ran
    for name, by_target in results["scenarios"].items():
        scenario = next(s for s in SCENARIOS if s.name == name)
        expected = {"gateway", "floor"} if scenario.floor else {"gateway"}
        assert set(by_target) == expected, name
        for target, figures in by_target.items():
            assert set(figures) == FIELDS, (name, target)
            assert figures["rps"] >= 0, (name, target)
            assert figures["cpu_s_per_1k"] is None or figures["cpu_s_per_1k"] >= 0
            if scenario.kind == "http":
                # GraphQL errors would mean a broken scenario; S8 counts events lost to
                # overload, which depends on the machine.
                assert figures["errors"] == 0, (name, target)
            assert figures["p50_ms"] <= figures["p95_ms"] <= figures["p99_ms"], (name, target)
            assert set(figures["round_trips"]) == set(STORES)
            # Quick mode measures one round; its own figures are the means.
            [measured_round] = figures["rounds"]
            assert measured_round["rps"] == figures["rps"], (name, target)
        if scenario.kind == "http":
            # The stores were warmed by an unmeasured round over every server first.
            warmed = f"{name}: 1 unmeasured round(s) of 1 s per server before the measured"
            assert any(note.startswith(warmed) for note in results["notes"]), name

    # The gateway's metrics store is counted apart from PostgreSQL: S4 reads it once.
    if "S4" in ran:
        assert results["scenarios"]["S4"]["gateway"]["round_trips"]["metrics"] == 1

    # The floor answered exactly what the gateway answered.
    floor_checks = [c for c in results["checks"] if "gateway and floor" in c]
    with_floor = [s.name for s in SCENARIOS if s.floor and s.name in ran]
    assert len(floor_checks) == len(with_floor)
    assert all(c.endswith("answers equal") for c in floor_checks), floor_checks

    # A1: S1 alone and under abuse in the same run; the abusive client was refused.
    abuse = results["abuse"]
    assert abuse["alone"]["errors"] == abuse["under_abuse"]["errors"] == 0
    assert results["scenarios"]["A1"]["gateway"] == abuse["under_abuse"]
    assert abuse["p99_ratio"] > 0
    assert abuse["client"]["outcomes"].get("rate_limited", 0) > 0
    assert any(t["target"].startswith("S1 p99 under abuse") for t in results["targets"])
    assert orjson.loads((tmp_path / "abuse.json").read_bytes())["abuse"] == abuse
    assert "S1 p99 under abuse / alone" in (tmp_path / "abuse.md").read_text()

    # P1 and P2 (presence) also have a report of their own; nothing was left to embed
    # in the background while anything was measured.
    assert results["scenarios"]["P1"]["gateway"]["errors"] == 0
    presence = orjson.loads((tmp_path / "presence.json").read_bytes())
    assert presence["scenarios"] == {n: results["scenarios"][n] for n in ("P1", "P2")}
    assert "| P1 | gateway |" in (tmp_path / "presence.md").read_text()
    assert results["dataset"]["embeddings"]["seconds"] >= 0
    # The tasks S5 created were embedded by the harness before S6, not by a gateway
    # inside a measured window.
    assert any(note.startswith("Before S6: the ") for note in results["notes"]), results["notes"]

    markdown = (tmp_path / "latest.md").read_text()
    assert results["command"] in markdown
    for name in ran:
        assert f"| {name} | gateway |" in markdown
    for name in skipped:
        assert f"- {name}:" in markdown
    assert "## Targets" in markdown
    assert "## Abuse (A1, issue 10)" in markdown
    assert "CPU s / 1k req" in markdown
    assert set(results["ratios"]) == ran
    assert all("gateway_floor_p50" in results["ratios"][name] for name in with_floor)

    # The search stage ran after the scenarios, on its own tiny corpus.
    search = results["search"]
    assert search["items"] == 300
    assert search["command"] == results["command"]
    assert 0 <= search["recall"]["recall_at_10"] <= 1
    assert search["recall"]["hnsw_sql"]["n"] == search["queries"]
    assert search["recall"]["queries"] == search["queries"]
    assert 0 <= search["recall"]["queries_below_0_8"] <= search["queries"]
    assert f"of {search['queries']} below 0.8" in markdown
    # The model's pace is measured whether or not the corpus's vectors were cached.
    assert search["embedding"]["sentences_per_s"] > 0
    assert f"{search['embedding']['sentences_per_s']:,} sentences/s" in markdown
    for request in (
        "vector_semantic",
        "vector_semantic_as_text",
        "text_semantic",
        "text_keyword",
        "text_hybrid",
    ):
        figures = search["latency"][request]
        assert 0 < figures["p50_ms"] <= figures["p99_ms"], request
    assert search["write"]["writes_per_s"] > 0
    assert search["embedding"]["cached"] or search["embedding"]["sentences_per_s"] > 0
    for style in ("all", "question", "terms"):
        ndcg = search["relevance"]["ndcg_at_10"][style]
        assert set(ndcg) == {"KEYWORD", "SEMANTIC", "HYBRID"}
        assert all(0 <= value <= 1 for value in ndcg.values()), (style, ndcg)
    assert "## Search" in markdown
    assert "### Recall of HNSW against exact search" in markdown
    assert orjson.loads((tmp_path / "search.json").read_bytes()) == search
    assert (tmp_path / "search.md").read_text().startswith("# Search benchmark")

    # A separate search run merges into the latest results, keeping the scenarios.
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    without_search = {k: v for k, v in results.items() if k != "search"}
    (earlier / "latest.json").write_bytes(orjson.dumps(without_search))
    later = {**search, "generated_at": "2030-01-01T00:00:00+00:00", "command": "later"}
    assert report.merge_search(later, earlier) == earlier / "latest.json"
    merged = orjson.loads((earlier / "latest.json").read_bytes())
    assert merged["scenarios"] == results["scenarios"]
    assert merged["search"] == later
    merged_markdown = (earlier / "latest.md").read_text()
    assert "| S1 | gateway |" in merged_markdown
    assert "the Search section measured 2030-01-01T00:00:00+00:00 with `later`" in merged_markdown


def test_a_before_run_measures_another_revisions_gateway_beside_this_one(
    tmp_path: Path,
) -> None:
    path = run(Options.quick_mode(only=("S1",), before="HEAD", workers=2), results_dir=tmp_path)

    results = orjson.loads(path.read_bytes())
    assert set(results["scenarios"]["S1"]) == {"gateway", "gateway-before", "floor"}
    # Whole machine without the peer: both gateways under two workers, in the same rounds.
    assert set(results["scenarios"]["S1 x2"]) == {"gateway", "gateway-before"}
    assert results["scenarios"]["S1 x2"]["gateway-before"]["rps"] > 0
    assert "gateway_before_rps" in results["ratios"]["S1 x2"]
    before = results["scenarios"]["S1"]["gateway-before"]
    assert before["errors"] == 0 and before["rps"] > 0
    assert before["round_trips"] == results["scenarios"]["S1"]["gateway"]["round_trips"]
    assert {"gateway_before_p50", "gateway_before_rps", "gateway_before_cpu"} <= set(
        results["ratios"]["S1"]
    )
    # A change's measurement: the latest results are not replaced, and search left out.
    assert not (tmp_path / "latest.json").exists()
    assert "search" not in results
    markdown = path.with_suffix(".md").read_text()
    assert "| S1 | gateway-before |" in markdown
    assert "p50 / before" in markdown and "`HEAD`" in markdown
