"""Results out: `bench/results/<timestamp>.json` (+ `latest.json`) and `latest.md`.

The search stage's figures sit under a "search" key and in a "Search" section;
`merge_search` puts a separate search run into the latest results, keeping the
scenario results there. A run with the abuse scenario (A1) also writes its part on
its own, to `abuse.json` and `abuse.md`, so `--only A1` reports it without replacing
the latest full results; so does a run with the presence scenarios (P1, P2), to
`presence.json` and `presence.md`. A run with `--before REV` writes only
`<timestamp>.json` and `<timestamp>.md` (`write_comparison`): it measures a change, and
the latest results stay those of a run of the code as it is.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path
from typing import Any

import orjson

from bench import presence, search
from bench.checks import TARGETS

RESULTS_DIR = Path(__file__).with_name("results")
PROFILE_NOTES = Path(__file__).with_name("profile_notes.md")
FIELDS = ("rps", "p50_ms", "p95_ms", "p99_ms", "errors", "cpu_s", "rss_mb")


def write(
    results: dict[str, Any], stamp: str, directory: Path = RESULTS_DIR, *, latest: bool = True
) -> Path:
    """Write the run's JSON; with `latest`, make it the latest results too."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    if latest:
        shutil.copyfile(path, directory / "latest.json")
        (directory / "latest.md").write_text(markdown(results))
    if "abuse" in results:
        abuse = {key: results[key] for key in ("started_at", "command", "machine", "dataset")} | {
            "abuse": results["abuse"]
        }
        (directory / "abuse.json").write_bytes(
            orjson.dumps(abuse, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )
        (directory / "abuse.md").write_text(abuse_markdown(abuse))
    _write_presence(results, directory)
    return path


def write_comparison(results: dict[str, Any], stamp: str, directory: Path = RESULTS_DIR) -> Path:
    """A `--before` run's JSON and its Markdown beside it, leaving the latest results be."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{stamp}.json"
    path.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    path.with_suffix(".md").write_text(markdown(results, profile_notes=False))
    return path


def _write_presence(results: dict[str, Any], directory: Path) -> None:
    """presence.{json,md}: P1 and P2 with what the reader needs beside them."""
    scenarios = {
        name: by_target
        for name, by_target in results["scenarios"].items()
        if name.split(" ")[0] in presence.SCENARIOS
    }
    if not scenarios:
        return
    names = set(scenarios)
    part = {
        key: results[key]
        for key in ("started_at", "command", "machine", "versions", "dataset", "load", "notes")
    } | {
        "scenarios": scenarios,
        "ratios": {n: r for n, r in results["ratios"].items() if n in names},
        "checks": [c for c in results["checks"] if c.split(":")[0] in names],
    }
    (directory / "presence.json").write_bytes(
        orjson.dumps(part, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    )
    (directory / "presence.md").write_text(presence_markdown(part))


def presence_markdown(part: dict[str, Any]) -> str:
    """presence.md: the presence scenarios (issue 15) on their own."""
    dataset = part["dataset"]
    lines = [
        "# Polygraph benchmark: presence",
        "",
        f"Run {part['started_at']} with `{part['command']}`, on"
        f" {part['machine']['cores']} cores ({part['machine']['cpu']}), dataset"
        f" `{dataset['key']}` ({dataset['agents']:,} agents).{_embeddings(dataset)}",
        "",
        "Load: wrk with one thread, a warm-up then a measured window per server, the servers"
        " alternating within each round (the command gives the windows, rounds and"
        " connections); figures are means over rounds, peak RSS the largest.",
        "",
        *_scenario_table(part["scenarios"]),
        "",
        "| scenario | p50 / floor | rps / floor | CPU / floor | p50 / stock | rps / stock"
        " | CPU / stock |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, ratio in part["ratios"].items():
        cells = [
            _fmt(ratio.get(f"gateway_{other}_{what}"))
            for other in ("floor", "stock")
            for what in ("p50", "rps", "cpu")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "## Checks", ""]
    lines += [f"- {check}" for check in part["checks"]]
    lines += ["", "## Notes", ""]
    relevant = ("P1", "P2", "Round trips", "The machine")
    lines += [f"- {note}" for note in part["notes"] if note.startswith(relevant)]
    return "\n".join(lines) + "\n"


def abuse_markdown(abuse: dict[str, Any]) -> str:
    """abuse.md: scenario A1 on its own."""
    lines = [
        "# Polygraph benchmark: abuse",
        "",
        f"Run {abuse['started_at']} with `{abuse['command']}`, on"
        f" {abuse['machine']['cores']} cores ({abuse['machine']['cpu']}), dataset"
        f" `{abuse['dataset']['key']}`.",
        "",
        *_abuse_section(abuse["abuse"])[2:],
    ]
    return "\n".join(lines) + "\n"


def merge_search(searched: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Replace the "search" part of latest.{json,md} with searched, keeping the rest.

    Returns latest.json; without one (no scenario run yet) there is nothing to merge
    into, and search.json, written by the search run, is returned instead.
    """
    latest = directory / "latest.json"
    if not latest.exists():
        return directory / "search.json"
    results = orjson.loads(latest.read_bytes())
    results["search"] = searched
    latest.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    (directory / "latest.md").write_text(markdown(results))
    return latest


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def _trips(round_trips: dict[str, Any]) -> str:
    known = {k: v for k, v in round_trips.items() if v is not None}
    return " ".join(f"{k[:2]}={_fmt(v)}" for k, v in sorted(known.items())) or "-"


def _when(results: dict[str, Any]) -> list[str]:
    """Which part was measured when, should the search figures come from another run."""
    searched = results.get("search")
    if searched is None:
        return ["Search not measured in this run (see [search.md](search.md)).", ""]
    if searched.get("command") == results["command"]:
        return []
    return [
        f"Scenarios measured {results['started_at']} (the command above); the Search"
        f" section measured {searched['generated_at']} with `{searched.get('command', '?')}`"
        " and merged in afterwards.",
        "",
    ]


def _embeddings(dataset: dict[str, Any]) -> str:
    """What was left to embed before measuring (bench.dataset.settle_embeddings)."""
    settled = dataset.get("embeddings")
    if not settled:
        return ""
    filled = {k: v for k, v in settled["filled"].items() if v}
    if not filled:
        return f" No embedding was pending (checked in {settled['seconds']:g} s)."
    done = ", ".join(f"{count:,} {kind}" for kind, count in filled.items())
    return (
        f" Pending embeddings filled before any scenario was measured: {done}, in"
        f" {settled['seconds']:g} s."
    )


def markdown(results: dict[str, Any], *, profile_notes: bool = True) -> str:
    """`profile_notes`: append bench/profile_notes.md (the latest results carry it)."""
    ratios = results["ratios"].values()
    # The servers this run measured beside the gateway: a column set for each.
    bases = [
        base
        for base in ("floor", "peer", "stock", "before")
        if any(f"gateway_{base}_p50" in ratio for ratio in ratios)
    ]
    lines = [
        "# Polygraph benchmark",
        "",
        f"Run {results['started_at']} with `{results['command']}`.",
        "",
        *_when(results),
        "## Machine and versions",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in results["machine"].items()]
    lines += ["", "| component | version |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(results["versions"].items())]
    dataset = results["dataset"]
    lines += [
        "",
        "## Dataset",
        "",
        f"`{dataset['key']}` in database `{dataset['database']}`: {dataset['agents']:,} agents, "
        f"{dataset['tasks']:,} tasks, {dataset['relationships']:,} agent relationships, "
        f"{dataset['dependencies']:,} task dependencies"
        + "".join(
            f", {v:,} {k.replace('_', ' ')}"
            for k, v in dataset["extra"].items()
            if isinstance(v, int)
        )
        + (
            f", metric points ending {dataset['extra']['metrics_end']}"
            if "metrics_end" in dataset["extra"]
            else ""
        )
        + f" ({dataset['rows']:,} rows). Loaded in {dataset['load_seconds']:.1f} s, "
        f"{dataset['rows_per_s']:,} rows/s"
        + (" (loaded by an earlier run; reused)." if dataset["cached"] else ".")
        + _embeddings(dataset),
        "",
        "## Results",
        "",
        f"Load: {results['load']['description']}",
        "",
        *_scenario_table(results["scenarios"]),
    ]
    lines += [
        "",
        (
            "Round trips per request: po=postgres, ne=neo4j, re=redis, me=the gateway's"
            " metrics store (PostgreSQL on a pool of its own; the floor counts it as po)."
        ),
        "",
    ]
    lines += [
        "## Ratios",
        "",
        "The gateway's figure over the other server's, measured in the same rounds: p50 and"
        " CPU per request below 1 and rps above 1 favour the gateway."
        + (" `stock` is the gateway on graphql-core's own executor." if "stock" in bases else "")
        + (
            f" `before` is the gateway of {_before_of(results)}, run beside this one."
            if "before" in bases
            else ""
        ),
        "",
        "| scenario | "
        + " | ".join(f"{what} / {base}" for base in bases for what in ("p50", "rps", "CPU"))
        + " |",
        "|---|" + "---:|" * (3 * len(bases)),
    ]
    for name, ratio in results["ratios"].items():
        cells = [
            _fmt(ratio.get(f"gateway_{other}_{what}"))
            for other in bases
            for what in ("p50", "rps", "cpu")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    lines += ["", "## Targets (issues 6 and 11)", "", "| target | result | met |", "|---|---|---|"]
    for target in results["targets"]:
        met = {True: "met", False: "**missed**", None: "not measured"}[target["met"]]
        lines.append(f"| {target['target']} | {target['result']} | {met} |")
    if "abuse" in results:
        lines += ["", *_abuse_section(results["abuse"])]
    if "search" in results:
        lines += ["", "## Search", "", *search.section(results["search"], heading="###")]
    if results["skipped"]:
        lines += ["", "## Skipped", ""]
        lines += [f"- {name}: {why}" for name, why in results["skipped"].items()]
    lines += ["", "## Checks", ""]
    lines += [f"- {check}" for check in results["checks"]]
    lines += ["", "## Notes", ""]
    lines += [f"- {note}" for note in results["notes"]]
    if profile_notes and PROFILE_NOTES.exists():
        lines += ["", PROFILE_NOTES.read_text().strip()]
    return "\n".join(lines) + "\n"


def _before_of(results: dict[str, Any]) -> str:
    """The revision a `--before` run compared against, from its command line."""
    for argument in shlex.split(results["command"]):
        if argument.startswith("--before="):
            return f"`{argument.removeprefix('--before=')}`"
    return "another revision"


def _scenario_table(scenarios: dict[str, Any]) -> list[str]:
    lines = [
        "| scenario | server | rps | p50 ms | p95 ms | p99 ms | errors | round trips | CPU s"
        " | CPU s / 1k req | peak RSS MB |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, by_target in scenarios.items():
        for target in TARGETS:
            row = by_target.get(target)
            if row is None:
                continue
            cells = [_fmt(row[f]) for f in FIELDS[:5]]
            lines.append(
                f"| {name} | {target} | {' | '.join(cells)} | {_trips(row['round_trips'])}"
                f" | {_fmt(row['cpu_s'])} | {_fmt(row.get('cpu_s_per_1k'))}"
                f" | {_fmt(row['rss_mb'])} |"
            )
    return lines


def _abuse_section(abuse: dict[str, Any]) -> list[str]:
    client = abuse["client"]
    lines = [
        "## Abuse (A1, issue 10)",
        "",
        f"S1 measured alone, then while a second client sends the mix below at full speed"
        f" ({client['connections']} connections), alternating within each round of the"
        " same run. S1's own caller is never refused (an operator with a quota far"
        " above its rate).",
        "",
        "| S1 | rps | p50 ms | p95 ms | p99 ms | errors | CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, key in (("alone", "alone"), ("under abuse", "under_abuse")):
        row = abuse[key]
        cells = [_fmt(row[f]) for f in ("rps", "p50_ms", "p95_ms", "p99_ms", "errors", "cpu_s")]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    ratio = abuse["p99_ratio"]
    outcomes = ", ".join(f"{kind} {count:,}" for kind, count in client["outcomes"].items())
    lines += [
        "",
        f"S1 p99 under abuse / alone: **{_fmt(ratio)}x** (target: at most"
        f" {abuse['p99_limit']:g}x).",
        "",
        f"The abusive client: {client['rps']:,.0f} requests/s; answers: {outcomes}"
        f" ({client['expensive_ran_per_s']:.1f} expensive operations ran per second).",
        f"Quotas in this scenario: {abuse['quotas']}.",
        "",
        "The mix, sent in turn:",
        "",
    ]
    lines += [f"- {label}" for label in client["mix"]]
    return lines
