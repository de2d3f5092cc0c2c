"""The benchmark scenarios: what each sends, to the gateway, the floor and the peer.

Every HTTP scenario is a list of request bodies the load generator cycles through
(so ids vary between requests), the same bytes for the gateway and the floor. The
floor reads only `variables`; the peer gets its own documents, since PostGraphile
exposes the tables under its own names.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

from bench import presence
from bench.ids import global_id

Kind = Literal["http", "ingest", "fanout", "abuse", "claims", "presence"]

S1_QUERY = "query S1($id: ID!) { node(id: $id) { ... on Agent { id name role status createdAt } } }"

# S2's one-hour summary per agent; a gateway without `Agent.metrics` runs S2 without it.
S2_METRICS_FRAGMENT = (
    'metrics(name: "energy", from: $metricsFrom, to: $metricsTo, bucket: "1h", aggregate: AVG)'
    " { points { time value } }"
)


def s2_query(metrics_fragment: str | None = None) -> str:
    """A page of 50 agents with 10 tasks each and their collaborators; with a metrics
    summary per agent when `metrics_fragment` is given. Newest first: the oldest agents
    are the orchestrators at the top of the hierarchy, with hundreds of delegations each,
    which would measure one unusual page instead of a typical one."""
    params = "$metricsFrom: DateTime!, $metricsTo: DateTime!" if metrics_fragment else ""
    head = f"query S2({params})" if params else "query S2"
    extra = f" {metrics_fragment}" if metrics_fragment else ""
    return (
        f"{head} {{ agents(first: 50, orderBy: CREATED_AT_DESC) {{ edges {{ node {{"
        " id name status"
        " tasks(first: 10) { edges { node { id title status priority } } }"
        " collaborators { type weight agent { id name } }"
        f"{extra} }} }} }} }}"
    )


# S2-pg: exactly the part of S2 PostGraphile serves (PostgreSQL only), with the leaves
# of the peer's document.
S2_PG_QUERY = (
    "query S2pg { agents(first: 50, orderBy: CREATED_AT_DESC) { edges { node {"
    " id name status tasks(first: 10) { edges { node { id title status priority } } } } } } }"
)

S3_QUERY = (
    "query S3($id: ID!) { agentNeighbourhood(agentId: $id, depth: 2) {"
    " nodes { distance agent { id name } } edges { type source { id } target { id } } } }"
)

S4_QUERY = (
    "query S4($agents: [ID!]!, $from: DateTime!, $to: DateTime!) {"
    ' metricSeries(names: ["energy"], agents: $agents, from: $from, to: $to,'
    ' bucket: "5m", aggregate: AVG) { agentId name points { time value } } }'
)

S5_MUTATION = (
    "mutation S5($input: CreateTaskInput!) { createTask(input: $input) {"
    " task { id title status priority } userErrors { field message code } } }"
)

S6_QUERY = "query S6 { mySessions { id role createdAt } }"

S8_SUBSCRIPTION = "subscription S8 { taskUpdated { change at task { id title status } } }"

PEER_S1_QUERY = (
    "query S1($id: UUID!) { agentByRowId(rowId: $id) { id name role status createdAt } }"
)
PEER_S2_QUERY = (
    "query S2 { allAgents(first: 50, orderBy: [CREATED_AT_DESC, PRIMARY_KEY_DESC]) { nodes {"
    " id name status"
    " tasksByAssigneeId(first: 10, orderBy: [CREATED_AT_DESC, PRIMARY_KEY_DESC])"
    " { nodes { id title status priority } } } } }"
)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    kind: Kind
    # Schema coordinates that must exist for the scenario to run ("Type.field").
    needs: tuple[str, ...] = ()
    read: bool = True
    peer: bool = False
    floor: bool = True
    # Response keys whose values differ between two correct answers (new ids).
    volatile: frozenset[str] = field(default_factory=frozenset)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("S1", "agent by id, a few scalar fields (PostgreSQL)", "http", peer=True),
    Scenario("S2", "50 agents, 10 tasks each, collaborators, one-hour metrics summary", "http"),
    Scenario(
        "S2-pg",
        "50 agents, 10 tasks each (S2's PostgreSQL part, PostGraphile's share)",
        "http",
        peer=True,
    ),
    Scenario("S3", "two-hop agent neighbourhood (Neo4j)", "http"),
    Scenario(
        "S4",
        "one day of one metric for 20 agents in 5-minute buckets",
        "http",
        needs=("Query.metricSeries",),
    ),
    Scenario(
        "S5",
        "createTask mutation (rows + audit + outbox)",
        "http",
        read=False,
        volatile=frozenset({"id"}),
    ),
    Scenario("S6", "authenticated query resolving the session from Redis", "http"),
    Scenario(
        "S7",
        "bulk metrics ingest, NDJSON to POST /ingest/metrics",
        "ingest",
        needs=("POST /ingest/metrics",),
        read=False,
        # The floor gets the batch after the gateway stored it: all duplicates there.
        volatile=frozenset({"accepted", "duplicates"}),
    ),
    Scenario(
        "S8",
        "subscription fan-out to 100 WebSocket subscribers",
        "fanout",
        read=False,
        volatile=frozenset(),
    ),
    Scenario(
        "C1",
        "claimNextTask: 20 claimers take ready tasks from one queue (bench/claims.py)",
        "claims",
        needs=("Mutation.claimNextTask",),
        read=False,
        volatile=frozenset({"id"}),
    ),
    Scenario(
        "P1",
        "reportPresence heartbeats from 1,000 agents, each from its own bound session"
        " (bench/presence.py)",
        "presence",
        needs=("Mutation.reportPresence",),
        read=False,
        volatile=frozenset({"lastSeenAt"}),
    ),
    Scenario(
        "P2",
        "50 agents with their presence (Redis), half of them online",
        "http",
        needs=("Agent.presence",),
    ),
    Scenario(
        "A1",
        "S1 while a second client sends refused and expensive operations at full speed",
        "abuse",
        floor=False,
    ),
)


def by_name(name: str) -> Scenario:
    for scenario in SCENARIOS:
        if scenario.name == name:
            return scenario
    raise KeyError(name)


@dataclass(frozen=True)
class Fixtures:
    """Ids from the dataset the request bodies refer to."""

    agent_ids: Sequence[UUID]
    task_ids: Sequence[UUID]
    metrics_from: str
    metrics_to: str


def _body(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"query": query, "variables": variables or {}}


def gateway_bodies(
    name: str, fixtures: Fixtures, *, s2_metrics: str | None = None, count: int = 200
) -> list[dict[str, Any]]:
    """Request bodies for one HTTP scenario; the floor gets the same ones."""
    rng = random.Random(f"bench-{name}")
    agents = list(fixtures.agent_ids)
    if name == "S1":
        return [
            _body(S1_QUERY, {"id": global_id("Agent", rng.choice(agents))}) for _ in range(count)
        ]
    if name == "S2":
        # A one-hour summary: the last hour of the data, in one 1h bucket per agent.
        hour_before = datetime.fromisoformat(fixtures.metrics_to) - timedelta(hours=1)
        variables = (
            {"metricsFrom": hour_before.isoformat(), "metricsTo": fixtures.metrics_to}
            if s2_metrics
            else {}
        )
        return [_body(s2_query(s2_metrics), variables)]
    if name == "S2-pg":
        return [_body(S2_PG_QUERY)]
    if name == "S3":
        return [
            _body(S3_QUERY, {"id": global_id("Agent", rng.choice(agents))}) for _ in range(count)
        ]
    if name == "S4":
        return [
            _body(
                S4_QUERY,
                {
                    "agents": [global_id("Agent", a) for a in rng.sample(agents, 20)],
                    "from": fixtures.metrics_from,
                    "to": fixtures.metrics_to,
                },
            )
            for _ in range(min(count, 50))
        ]
    if name == "S5":
        return [
            _body(
                S5_MUTATION,
                {
                    "input": {
                        "title": f"Benchmark task {i:04d}",
                        "priority": 1 + i % 10,
                        "repository": "bench/load",
                        "waitForProjection": False,
                    }
                },
            )
            for i in range(count)
        ]
    if name == "S6":
        return [_body(S6_QUERY)]
    if name == "P2":
        return [presence.page_body()]
    raise KeyError(f"{name} is not an HTTP scenario")


def peer_bodies(name: str, fixtures: Fixtures, *, count: int = 200) -> list[dict[str, Any]]:
    """PostGraphile documents for S1 and S2-pg (S2's PostgreSQL part)."""
    rng = random.Random(f"bench-{name}")
    if name == "S1":
        return [
            _body(PEER_S1_QUERY, {"id": str(rng.choice(list(fixtures.agent_ids)))})
            for _ in range(count)
        ]
    if name == "S2-pg":
        return [_body(PEER_S2_QUERY)]
    raise KeyError(f"no peer for {name}")


POINTS_PER_REQUEST = 500
# NDJSON lines travel to wrk one body per line: RECORD_SEPARATOR stands for the newlines.
RECORD_SEPARATOR = "\x1e"


def ingest_bodies(fixtures: Fixtures, *, count: int = 20) -> list[str]:
    """S7: NDJSON batches of points in the shape issue 4 gives `(time, agent_id, name, value,
    labels)`, spread over the day before `metrics_from` so they land in many buckets (and
    never in the future, which the gateway refuses). Not in the window S2 and S4 read:
    the points stay in the dataset, and would change those scenarios' answers from the
    first run that wrote them on."""
    import orjson

    rng = random.Random("bench-S7")
    agents = [str(a) for a in fixtures.agent_ids]
    end = datetime.fromisoformat(fixtures.metrics_from)
    bodies = []
    for _ in range(count):
        lines = [
            orjson.dumps(
                {
                    "time": (end - timedelta(microseconds=rng.randrange(86_400 * 10**6)))
                    .isoformat()
                    .replace("+00:00", "Z"),
                    "agent_id": rng.choice(agents),
                    "name": "energy",
                    "value": round(rng.uniform(0, 100), 3),
                    "labels": {"source": "bench"},
                }
            ).decode()
            for _ in range(POINTS_PER_REQUEST)
        ]
        bodies.append(RECORD_SEPARATOR.join(lines))
    return bodies


# A1: what the abusive client sends, in turn, as fast as the gateway answers.
Caller = Literal["abuser", "anonymous", "bad-key"]


@dataclass(frozen=True)
class AbuseRequest:
    """One request of the abuse mix; `caller` says whose credentials it carries: the
    abusive viewer's session, none, or an API key that does not exist."""

    label: str
    body: bytes
    caller: Caller
    content_type: str = "application/json"


def _json(query: str, variables: dict[str, Any] | None = None) -> bytes:
    import orjson

    return orjson.dumps(_body(query, variables))


LOGIN_GUESS = 'mutation { login(input: {apiKey: "pg_guess000_' + "0" * 43 + '"}) { token } }'

# Refused by the request cost limits (issue 10); sent only to a gateway that has them,
# since a gateway without them would run these for minutes (see `cost_limits_probe`).
_HOPS = 14
_DEEP = (
    "agents(first: 5) { edges { node { "
    + "collaborators { agent { " * _HOPS
    + "id"
    + " } }" * _HOPS
    + " } } }"
)
_ALIASES = " ".join(f"a{i}: __typename" for i in range(1000))
COST_REFUSED = (
    ("collaborators 14 hops deep", "{ " + _DEEP + " }"),
    ("1,000 aliases", "{ " + _ALIASES + " }"),
    (
        "tasks(first: 100000) under 50 agents",
        "{ agents(first: 50) { edges { node { tasks(first: 100000) { totalCount } } } } }",
    ),
)


def cost_limits_probe() -> bytes:
    """Harmless where nothing limits cost (1,000 `__typename`s), refused where limits are."""
    return _json("{ " + _ALIASES + " }")


def abuse_mix(fixtures: Fixtures, *, cost_limits: bool) -> list[AbuseRequest]:
    """The abuse mix: expensive reads the abuser's quota allows a few of a second, and
    requests refused for their rate, their credentials, their form or (with the request
    cost limits) their cost. Add a kind of abuse by adding a line here."""
    rng = random.Random("bench-A1")
    agent = global_id("Agent", rng.choice(list(fixtures.agent_ids)))
    mix = [
        AbuseRequest("S2, expensive: runs within the abuser's quota", _json(s2_query()), "abuser"),
        AbuseRequest("S3, expensive (Neo4j)", _json(S3_QUERY, {"id": agent}), "abuser"),
        AbuseRequest("S1 without credentials", _json(S1_QUERY, {"id": agent}), "anonymous"),
        AbuseRequest("login with a guessed key", _json(LOGIN_GUESS), "anonymous"),
        AbuseRequest("S1 with a guessed API key", _json(S1_QUERY, {"id": agent}), "bad-key"),
        AbuseRequest("malformed JSON", b'{"query": "{ agents(first: 5', "abuser"),
        AbuseRequest("GraphQL syntax error", _json("{ agents(first: ) { totalCount }"), "abuser"),
    ]
    if cost_limits:
        mix += [AbuseRequest(label, _json(query), "abuser") for label, query in COST_REFUSED]
    return mix
