"""What the harness asks the servers besides load: schema capabilities, equal answers,
round trips; and how runs become the figures, ratios and targets of the report."""

from __future__ import annotations

import statistics
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from bench.scenarios import (
    RECORD_SEPARATOR,
    S2_METRICS_FRAGMENT,
    Fixtures,
    Scenario,
    by_name,
    cost_limits_probe,
    gateway_bodies,
    ingest_bodies,
    peer_bodies,
)

if TYPE_CHECKING:
    from bench.loadgen import LoadResult
    from bench.servers import Child, Measure

# The gateway counts its metrics store (PostgreSQL, on a pool of its own) apart; the
# floor counts that query as PostgreSQL's.
STORES = ("postgres", "neo4j", "redis", "metrics")
# What the gateway's figures are divided by, and the name each ratio goes by.
RATIO_BASES = (
    ("floor", "floor"),
    ("peer", "peer"),
    ("gateway-stock", "stock"),
    ("gateway-before", "before"),
)
READS = ("S1", "S2", "S2-pg", "S3", "S4", "S6")
# The servers a scenario may measure, in report order. `gateway-stock` is the gateway
# on graphql-core's own executor (POLYGRAPH_EXECUTOR=stock): the planned executor's
# before and after, measured in the same rounds.
# `gateway-cached` has the entity cache on (every other gateway runs without it).
# `gateway-before` runs another revision's code (`polygraph bench --before REV`).
TARGETS = ("gateway", "gateway-stock", "gateway-before", "gateway-cached", "floor", "peer")

_INTROSPECTION = (
    "{ __schema { queryType { fields { name } } mutationType { fields { name } } }"
    ' agent: __type(name: "Agent") { fields { name } } }'
)


def post(
    url: str, body: Mapping[str, Any] | bytes, token: str | None, *, content_type: str = ""
) -> tuple[int, dict[str, str], Any]:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {"content-type": content_type or "application/json"}
    if token:
        headers["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers.items()), orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            decoded: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            decoded = raw.decode(errors="replace")
        return exc.code, dict(exc.headers.items()), decoded


def capabilities(gateway_url: str, token: str) -> set[str]:
    """`Type.field` coordinates the running gateway serves, plus `/ingest/metrics`."""
    status, _, body = post(gateway_url + "/graphql", {"query": _INTROSPECTION}, token)
    if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
        raise RuntimeError(f"the gateway cannot answer introspection ({status}): {body!s:.500}")
    data = body["data"]
    found: set[str] = set()
    schema = data.get("__schema") or {}
    for root, key in (("Query", "queryType"), ("Mutation", "mutationType")):
        for item in (schema.get(key) or {}).get("fields") or []:
            found.add(f"{root}.{item['name']}")
    for item in (data.get("agent") or {}).get("fields") or []:
        found.add(f"Agent.{item['name']}")
    status, _, _ = post(
        gateway_url + "/ingest/metrics", b"", token, content_type="application/x-ndjson"
    )
    if status not in (404, 405):
        found.add("POST /ingest/metrics")
    return found


Body = dict[str, Any] | str


@dataclass
class HttpPlan:
    urls: dict[str, str]
    bodies: dict[str, list[Body]]
    notes: list[str] = field(default_factory=list)
    content_type: str = "application/json"


def http_plan(
    scenario: Scenario,
    fixtures: Fixtures,
    found: set[str],
    children: Mapping[str, Child],
    token: str,
) -> HttpPlan:
    name = scenario.name
    if scenario.kind == "ingest":
        batches: list[Body] = list(ingest_bodies(fixtures))
        plan = HttpPlan(
            {"gateway": children["gateway"].url + "/ingest/metrics"},
            {"gateway": batches},
            ["S7 rps is metric points per second (NDJSON batches of 500 points)."],
            content_type="application/x-ndjson",
        )
        for other in ("gateway-stock", "gateway-before"):
            if other in children:
                plan.urls[other] = children[other].url + "/ingest/metrics"
                plan.bodies[other] = batches
        if scenario.floor and "floor" in children:
            plan.urls["floor"] = children["floor"].url + f"/floor/{name}"
            plan.bodies["floor"] = batches
        return plan
    gateway = children["gateway"].url + "/graphql"
    notes: list[str] = []
    metrics = None
    if name == "S2" and "Agent.metrics" in found:
        candidate = gateway_bodies(name, fixtures, s2_metrics=S2_METRICS_FRAGMENT)[0]
        _, _, body = post(gateway, candidate, token)
        if isinstance(body, dict) and not body.get("errors"):
            metrics = S2_METRICS_FRAGMENT
            notes.append("S2 includes the one-hour metrics summary (Agent.metrics).")
        else:
            notes.append(f"S2 ran without its metrics summary: the fragment was refused: {body}")
    elif name == "S2":
        notes.append("S2 ran without its metrics summary: Agent.metrics is not in the schema yet.")
    bodies: list[Body] = list(gateway_bodies(name, fixtures, s2_metrics=metrics))
    plan = HttpPlan({"gateway": gateway}, {"gateway": bodies}, notes)
    for other in ("gateway-stock", "gateway-before", "gateway-cached"):
        if other in children:
            plan.urls[other] = children[other].url + "/graphql"
            plan.bodies[other] = bodies
    if scenario.floor and "floor" in children:
        plan.urls["floor"] = children["floor"].url + f"/floor/{name}"
        plan.bodies["floor"] = bodies
    if scenario.peer and "peer" in children:
        plan.urls["peer"] = children["peer"].url + "/graphql"
        plan.bodies["peer"] = list(peer_bodies(name, fixtures))
        notes.append(
            f"{name} peer: PostGraphile answers the same leaves from the same rows, without"
            " a session check (the gateway and the floor check a Bearer session)."
        )
    return plan


def operation_cost(url: str, body: Mapping[str, Any], token: str) -> int:
    """What the gateway says an operation costs (`extensions.cost.requested`); 1 from a
    gateway without a cost model."""
    _, _, answer = post(url, body, token)
    cost = answer.get("extensions", {}).get("cost") if isinstance(answer, dict) else None
    requested = cost.get("requested") if isinstance(cost, dict) else None
    return max(requested, 1) if isinstance(requested, int) else 1


def has_cost_limits(url: str, token: str) -> bool:
    """Whether the gateway refuses over-complex operations before running them."""
    _, _, answer = post(url, cost_limits_probe(), token)
    errors = answer.get("errors") if isinstance(answer, dict) else None
    codes = {(e.get("extensions") or {}).get("code") for e in errors or [] if isinstance(e, dict)}
    return "QUERY_TOO_COMPLEX" in codes


def _without_extensions(answer: Any) -> Any:
    # Response metadata (the gateway's `extensions.cost`), not part of the answer.
    if isinstance(answer, dict):
        return {k: v for k, v in answer.items() if k != "extensions"}
    return answer


def _masked(value: Any, volatile: frozenset[str]) -> Any:
    if isinstance(value, dict):
        return {
            k: "<volatile>" if k in volatile else _masked(v, volatile) for k, v in value.items()
        }
    if isinstance(value, list):
        return [_masked(v, volatile) for v in value]
    return value


def compare(scenario: Scenario, plan: HttpPlan, token: str) -> str:
    """Send the first body to the gateway and the floor; their answers must be equal."""
    body = plan.bodies["gateway"][0]
    sent = body.replace(RECORD_SEPARATOR, "\n").encode() if isinstance(body, str) else body
    answers = {
        t: post(plan.urls[t], sent, token, content_type=plan.content_type)[2]
        for t in ("gateway", "floor")
    }
    return _verdict(scenario, answers)


def compare_samples(scenario: Scenario, samples: Mapping[str, Any]) -> str:
    return _verdict(scenario, samples)


def _verdict(scenario: Scenario, answers: Mapping[str, Any]) -> str:
    volatile = scenario.volatile | ({"at"} if scenario.name == "S8" else frozenset())
    gateway, floor = (
        _masked(_without_extensions(answers.get(t)), volatile) for t in ("gateway", "floor")
    )
    if gateway is not None and gateway == floor and not _has_errors(gateway):
        return f"{scenario.name}: gateway and floor answers equal"
    return (
        f"{scenario.name}: gateway and floor answers DIFFER: gateway "
        f"{orjson.dumps(gateway)[:300].decode()} floor {orjson.dumps(floor)[:300].decode()}"
    )


def _has_errors(answer: Any) -> bool:
    return isinstance(answer, dict) and bool(answer.get("errors"))


def parse_round_trips(header: str) -> dict[str, int]:
    pairs = (part.strip().split("=") for part in header.split(",") if part.strip())
    return {store: int(count) for store, count in pairs}


# Requests before the sample: enough that each of two workers has most likely seen one.
_WARM_UP = 6
_COUNTED = 5
# What a sample sends in all (a claims queue must hold a task for each).
SAMPLE_REQUESTS = _WARM_UP + _COUNTED


def sample_round_trips(
    url: str, bodies: Sequence[Body], token: str, *, content_type: str = "application/json"
) -> dict[str, Any]:
    """Round trips per request from `X-Round-Trips` on a sample of responses (median),
    in steady state. The sample comes after the measured rounds, longer after the
    server last saw this session than its in-process session cache keeps it
    (`POLYGRAPH_SESSION_CACHE_S`), and a process's first request would pay for looking
    it up again (one Redis and one PostgreSQL round trip more), its rate-limit lease
    renewed too. Under `--workers N` each worker has its own cache and each connection
    lands on any of them: `_WARM_UP` requests go first, uncounted."""
    seen: dict[str, list[int]] = {store: [] for store in STORES}
    warm_up = [bodies[index % len(bodies)] for index in range(_WARM_UP)]
    for index, body in enumerate([*warm_up, *bodies[:_COUNTED]]):
        sent = body.replace(RECORD_SEPARATOR, "\n").encode() if isinstance(body, str) else body
        _, headers, _ = post(url, sent, token, content_type=content_type)
        if index < _WARM_UP:
            continue
        counted = parse_round_trips(headers.get("x-round-trips", headers.get("X-Round-Trips", "")))
        for store in STORES:
            seen[store].append(counted.get(store, 0))
    return {store: statistics.median(counts) if counts else None for store, counts in seen.items()}


def summarise(
    measured: Sequence[tuple[LoadResult, Measure]], round_trips: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Means over rounds, and each round's figures; the largest peak RSS; CPU seconds per
    1,000 requests (of the load generator's: HTTP requests, S7 batches, S8 deliveries)
    over all rounds."""
    results = [r for r, _ in measured]
    requests = sum(r.requests for r in results)
    cpu = sum(m.cpu_s for _, m in measured)
    return {
        "rps": round(statistics.mean(r.rps for r in results), 1),
        "p50_ms": round(statistics.mean(r.p50_ms for r in results), 3),
        "p95_ms": round(statistics.mean(r.p95_ms for r in results), 3),
        "p99_ms": round(statistics.mean(r.p99_ms for r in results), 3),
        "errors": sum(r.errors for r in results),
        "round_trips": dict(round_trips) if round_trips else dict.fromkeys(STORES),
        "cpu_s": round(statistics.mean(m.cpu_s for _, m in measured), 2),
        "cpu_s_per_1k": round(cpu / requests * 1000, 3) if requests else None,
        "rss_mb": round(max(m.rss_mb for _, m in measured), 1),
        # Each round's own figures, in the order measured: how steady the mean is.
        "rounds": [
            {"rps": round(r.rps, 1), "p50_ms": round(r.p50_ms, 3), "cpu_s": round(m.cpu_s, 2)}
            for r, m in measured
        ],
    }


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def _ratios(scenarios: Mapping[str, Any]) -> dict[str, Any]:
    """The gateway against each other server: p50 and CPU per request (lower is better
    below 1), throughput (higher is better above 1)."""
    ratios: dict[str, Any] = {}
    for name, by_target in scenarios.items():
        gateway = by_target.get("gateway")
        entry: dict[str, Any] = {}
        if gateway:
            for other, key in RATIO_BASES:
                theirs = by_target.get(other)
                if not theirs:
                    continue
                found = {
                    f"gateway_{key}_p50": _ratio(gateway["p50_ms"], theirs["p50_ms"]),
                    f"gateway_{key}_rps": _ratio(gateway["rps"], theirs["rps"]),
                    f"gateway_{key}_cpu": _ratio(
                        gateway.get("cpu_s_per_1k"), theirs.get("cpu_s_per_1k")
                    ),
                }
                entry.update({k: v for k, v in found.items() if v is not None})
        ratios[name] = entry
    return ratios


ABUSE_P99_LIMIT = 2.0
# Issue 11: S8's p99, the last of 100 subscribers to get an event, within 2x the floor's.
FANOUT_P99_LIMIT = 2.0


def abuse_summary(alone: dict[str, Any], under: dict[str, Any]) -> dict[str, Any]:
    """S1 alone against S1 under abuse, measured in the same run."""
    ratio = under["p99_ms"] / alone["p99_ms"] if alone["p99_ms"] else None
    return {
        "alone": alone,
        "under_abuse": under,
        "p99_ratio": None if ratio is None else round(ratio, 2),
        "p99_limit": ABUSE_P99_LIMIT,
    }


def _ping_beside(session: Mapping[str, Any]) -> str:
    """The PING timed beside the lookups: what the round trip alone costs here."""
    if "ping_p99_ms" not in session:
        return ""
    return f"; a PING beside them p50 {session['ping_p50_ms']} ms, p99 {session['ping_p99_ms']} ms"


def _targets(
    scenarios: Mapping[str, Any],
    ratios: Mapping[str, Any],
    session: Mapping[str, Any],
    abuse: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    targets: list[dict[str, Any]] = []
    singles = [name for name in scenarios if name.endswith(" @1")]
    for name in (*READS, *singles):
        limit = 2.0 if name.startswith("S2") else 1.5
        ratio = ratios.get(name, {}).get("gateway_floor_p50")
        targets.append(
            {
                "target": f"{name} p50 within {limit:g}x of the floor",
                "result": "not run" if ratio is None else f"{ratio:.2f}x",
                "met": None if ratio is None else ratio <= limit,
            }
        )
    # Subscription fan-out: the event's last subscribers, against the floor's.
    fanout = scenarios.get("S8", {})
    gateway_p99 = (fanout.get("gateway") or {}).get("p99_ms")
    floor_p99 = (fanout.get("floor") or {}).get("p99_ms")
    p99_ratio = gateway_p99 / floor_p99 if gateway_p99 and floor_p99 else None
    targets.append(
        {
            "target": f"S8 p99 within {FANOUT_P99_LIMIT:g}x of the floor",
            "result": "not run" if p99_ratio is None else f"{p99_ratio:.2f}x",
            "met": None if p99_ratio is None else p99_ratio <= FANOUT_P99_LIMIT,
        }
    )
    # Whole machine against whole machine ("<name> xN", bench.harness).
    wholes = [name for name in scenarios if name.rpartition(" x")[2].isdigit()]
    for name in ("S1", "S2-pg", *singles, *wholes):
        if not by_name(name.partition(" ")[0]).peer:
            continue
        ratio = ratios.get(name, {}).get("gateway_peer_rps")
        targets.append(
            {
                "target": f"{name} throughput at least PostGraphile's",
                "result": "peer not run" if ratio is None else f"{ratio:.2f}x the peer's rps",
                "met": None if ratio is None else ratio >= 1.0,
            }
        )
    targets.append(
        {
            "target": "S6 session resolution under 1 ms p99 inside the gateway",
            "result": f"p50 {session['p50_ms']} ms, p99 {session['p99_ms']} ms"
            f" over {session['count']} lookups{_ping_beside(session)}",
            "met": session["p99_ms"] < 1.0,
        }
    )
    ratio = abuse.get("p99_ratio") if abuse else None
    targets.append(
        {
            "target": f"S1 p99 under abuse (A1) within {ABUSE_P99_LIMIT:g}x of S1 p99 alone",
            "result": "not run"
            if ratio is None or abuse is None
            else f"{ratio:.2f}x ({abuse['alone']['p99_ms']:.1f} ms alone,"
            f" {abuse['under_abuse']['p99_ms']:.1f} ms under abuse)",
            "met": None if ratio is None else ratio <= ABUSE_P99_LIMIT,
        }
    )
    targets.append(
        {
            "target": "round trips per request constant in page size",
            "result": "asserted by tests/integration/api/test_round_trips.py; figures above",
            "met": None,
        }
    )
    return targets


def assemble(
    *,
    started_at: str,
    command: str,
    machine: dict[str, Any],
    versions: dict[str, Any],
    dataset: dict[str, Any],
    scenarios: dict[str, Any],
    session: dict[str, Any],
    skipped: dict[str, str],
    checks: list[str],
    notes: list[str],
    load: str,
    abuse: dict[str, Any] | None = None,
) -> dict[str, Any]:
    ratios = _ratios(scenarios)
    results = {
        "machine": machine,
        "versions": versions,
        "command": command,
        "scenarios": scenarios,
        "started_at": started_at,
        "dataset": dataset,
        "load": {"description": load},
        "ratios": ratios,
        "targets": _targets(scenarios, ratios, session, abuse),
        "session_resolution": session,
        "skipped": skipped,
        "checks": checks,
        "notes": notes,
    }
    if abuse is not None:
        results["abuse"] = abuse
    return results
