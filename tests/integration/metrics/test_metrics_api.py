"""Metrics over GraphQL and `POST /ingest/metrics`, through the in-process gateway."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from starlette.testclient import TestClient

from resolvers.metrics import METRIC_RECORDED_CHANNEL
from tests.integration.api.conftest import Caller, GraphQL, data, unique
from tests.support.serving import wait_until

HOUR = timedelta(hours=1)


def _agent(gql: GraphQL, caller: Caller) -> str:
    created = gql(
        "mutation($n: String!) { createAgent(input: {name: $n, waitForProjection: false}) { agent { id } } }",
        {"n": unique("m")},
        caller=caller,
    )
    agent_id: str = data(created)["createAgent"]["agent"]["id"]
    return agent_id


def _metric(gql: GraphQL, caller: Caller, unit: str = "ratio") -> str:
    name = unique("m").replace("-", "_")
    body = gql(
        """mutation($n: String!, $u: String!) { registerMetric(input: {name: $n, unit: $u,
           description: "test"}) { metric { name unit } userErrors { field code } } }""",
        {"n": name, "u": unit},
        caller=caller,
    )
    assert data(body)["registerMetric"] == {
        "metric": {"name": name, "unit": unit},
        "userErrors": [],
    }
    return name


@pytest.mark.parametrize("name", ["Not A Name!", "cpu\n", "x" * 64])
def test_a_metric_name_out_of_form_is_not_registered(
    gql: GraphQL, operator: Caller, name: str
) -> None:
    body = gql(
        """mutation($n: String!) { registerMetric(input: {name: $n, unit: "ratio",
           description: "test"}) { metric { name } userErrors { field code } } }""",
        {"n": name},
        caller=operator,
    )
    assert data(body)["registerMetric"] == {
        "metric": None,
        "userErrors": [{"field": "name", "code": "BAD_USER_INPUT"}],
    }


RECORD = """mutation($points: [MetricPointInput!]!) { recordMetrics(input: {points: $points}) {
  accepted duplicates userErrors { field message code } } }"""


def _at(hours_back: float, seconds: int = 0) -> datetime:
    base = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return base - timedelta(hours=hours_back) + timedelta(seconds=seconds)


def _series(gql: GraphQL, caller: Caller, agent: str, name: str, **args: Any) -> dict[str, Any]:
    query = """query($id: ID!, $name: String!, $from: DateTime!, $to: DateTime!, $bucket: String!,
      $aggregate: MetricAggregate!, $fill: MetricFill!) { node(id: $id) { ... on Agent {
      metrics(name: $name, from: $from, to: $to, bucket: $bucket, aggregate: $aggregate, fill: $fill) {
        name bucket aggregate source agentId points { time value } } } } }"""
    variables = {
        "id": agent,
        "name": name,
        "bucket": "1h",
        "aggregate": "AVG",
        "fill": "NONE",
        **args,
    }
    series: dict[str, Any] = data(gql(query, variables, caller=caller))["node"]["metrics"]
    return series


def test_record_then_read_an_agents_series(gql: GraphQL, operator: Caller, viewer: Caller) -> None:
    agent, name = _agent(gql, operator), _metric(gql, operator)
    t0 = _at(3)
    points = [
        {
            "agentId": agent,
            "name": name,
            "value": v,
            "time": (t0 + i * 20 * timedelta(minutes=1)).isoformat(),
        }
        for i, v in enumerate([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    ]
    first = data(gql(RECORD, {"points": points}, caller=operator))["recordMetrics"]
    assert first == {"accepted": 6, "duplicates": 0, "userErrors": []}
    again = data(gql(RECORD, {"points": points[:2]}, caller=operator))["recordMetrics"]
    assert again == {"accepted": 0, "duplicates": 2, "userErrors": []}

    window = {"from": t0.isoformat(), "to": (t0 + 3 * HOUR).isoformat()}
    series = _series(gql, viewer, agent, name, **window)
    assert series["source"] == "HOUR" and series["bucket"] == "1h" and series["agentId"] == agent
    assert [p["value"] for p in series["points"]] == [2.0, 20.0]
    filled = _series(
        gql, viewer, agent, name, **window, bucket="30m", aggregate="MAX", fill="PREVIOUS"
    )
    assert filled["source"] == "MINUTE"
    assert [p["value"] for p in filled["points"]] == [2.0, 3.0, 20.0, 30.0, 30.0, 30.0]
    p99 = _series(gql, viewer, agent, name, **window, aggregate="P99")
    assert p99["source"] == "RAW"


def test_a_bad_point_writes_nothing_and_names_itself(gql: GraphQL, operator: Caller) -> None:
    agent, name = _agent(gql, operator), _metric(gql, operator)
    now = datetime.now(UTC)
    good = {"agentId": agent, "name": name, "value": 1.0, "time": (now - HOUR).isoformat()}
    stranger = "QWdlbnQ6MDAwMDAwMDAtMDAwMC0wMDAwLTAwMDAtMDAwMDAwMDAwMDAw"  # Agent:0000...
    points = [
        good,
        {**good, "name": "Not A Name!"},
        {**good, "name": "not_registered_anywhere"},
        {**good, "time": (now + timedelta(days=1)).isoformat()},
        {**good, "agentId": stranger},
        {**good, "labels": {"n": 1}},
        {**good, "time": (now - timedelta(days=400)).isoformat()},
        {**good, "labels": {"host": "a\u0000b"}},
        {**good, "name": name + "\n"},
    ]
    body = gql(RECORD, {"points": points}, caller=operator)
    payload = data(body)["recordMetrics"]
    assert payload["accepted"] == 0
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        ("points.1.name", "BAD_USER_INPUT"),
        ("points.2.name", "BAD_USER_INPUT"),
        ("points.3.time", "BAD_USER_INPUT"),
        ("points.4.agentId", "NOT_FOUND"),
        ("points.5.labels", "BAD_USER_INPUT"),
        ("points.6.time", "BAD_USER_INPUT"),
        ("points.7.labels", "BAD_USER_INPUT"),
        ("points.8.name", "BAD_USER_INPUT"),
    ]
    # The good point was not written either.
    series = _series(
        gql, operator, agent, name, **{"from": (now - 2 * HOUR).isoformat(), "to": now.isoformat()}
    )
    assert series["points"] == []


def test_viewers_cannot_record(gql: GraphQL, viewer: Caller, operator: Caller) -> None:
    agent, name = _agent(gql, operator), _metric(gql, operator)
    body = gql(RECORD, {"points": [{"agentId": agent, "name": name, "value": 1}]}, caller=viewer)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"


def test_many_agents_and_names_in_one_round_trip_and_a_summary(
    gql: GraphQL, operator: Caller
) -> None:
    agents = [_agent(gql, operator) for _ in range(3)]
    names = [_metric(gql, operator), _metric(gql, operator)]
    t0 = _at(1)
    points = [
        {
            "agentId": a,
            "name": n,
            "value": float(i + j + k),
            "time": (t0 + k * 10 * timedelta(minutes=1)).isoformat(),
        }
        for i, a in enumerate(agents)
        for j, n in enumerate(names)
        for k in range(6)
    ]
    data(gql(RECORD, {"points": points}, caller=operator))
    query = """query($names: [String!]!, $agents: [ID!]!, $from: DateTime!, $to: DateTime!) {
      metricSeries(names: $names, agents: $agents, from: $from, to: $to, bucket: "30m", aggregate: SUM) {
        agentId name source points { time value } } }"""
    variables = {
        "names": names,
        "agents": agents,
        "from": t0.isoformat(),
        "to": (t0 + HOUR).isoformat(),
    }
    found = data(gql(query, variables, caller=operator))["metricSeries"]
    assert gql.last_round_trips.get("metrics") == 1
    assert len(found) == 6
    by_key = {(s["agentId"], s["name"]): [p["value"] for p in s["points"]] for s in found}
    assert by_key[(agents[2], names[1])] == [3 * 3.0 + 3.0, 3 * 3.0 + 12.0]

    summary = """query($agents: [ID!], $names: [String!]) { metricsSummary(agents: $agents, names: $names, window: "1d") {
      agentId name latestValue latestAt recentAverage previousAverage trend points agent { id } } }"""
    rows = data(gql(summary, {"agents": agents[:1], "names": names[:1]}, caller=operator))[
        "metricsSummary"
    ]
    assert len(rows) == 1
    row = rows[0]
    assert row["latestValue"] == 5.0 and row["agent"]["id"] == agents[0]
    assert (row["points"], row["recentAverage"], row["previousAverage"]) == (6, 2.5, None)


def test_many_series_filled_with_their_agents_and_one_without_points(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    # Filled series are read as series and answered as rows; `agent` takes the objects.
    recorded, silent = _agent(gql, operator), _agent(gql, operator)
    name = _metric(gql, operator)
    t0 = _at(2)
    points = [
        {"agentId": recorded, "name": name, "value": v, "time": (t0 + k * HOUR).isoformat()}
        for k, v in ((0, 1.0), (2, 3.0))
    ]
    data(gql(RECORD, {"points": points}, caller=operator))
    query = """query($names: [String!]!, $agents: [ID!]!, $from: DateTime!, $to: DateTime!,
      $fill: MetricFill!) { metricSeries(names: $names, agents: $agents, from: $from, to: $to,
      bucket: "1h", aggregate: MAX, fill: $fill) { __typename agentId name bucket aggregate
      source points { time value } agent { id } } }"""
    variables = {
        "names": [name],
        "agents": [silent, recorded, silent],
        "from": t0.isoformat(),
        "to": (t0 + 3 * HOUR).isoformat(),
    }
    hours = [(t0 + k * HOUR).isoformat() for k in range(3)]
    for fill, values in (("NONE", [1.0, 3.0]), ("PREVIOUS", [1.0, 1.0, 3.0])):
        found = data(gql(query, {**variables, "fill": fill}, caller=viewer))["metricSeries"]
        assert gql.last_round_trips.get("metrics") == 1
        assert [(s["agentId"], s["agent"]["id"]) for s in found] == [
            (silent, silent),
            (recorded, recorded),
        ]
        empty, full = found
        assert empty["points"] == (
            [] if fill == "NONE" else [{"time": t, "value": None} for t in hours]
        )
        assert [p["value"] for p in full["points"]] == values
        assert (full["__typename"], full["bucket"], full["aggregate"], full["source"]) == (
            "MetricSeries",
            "1h",
            "MAX",
            "HOUR",
        )


def _ndjson(lines: list[Any]) -> Iterator[bytes]:
    for line in lines:
        text = line if isinstance(line, str) else json.dumps(line)
        # Split mid-line on purpose: the endpoint must reassemble lines across chunks.
        encoded = (text + "\n").encode()
        yield encoded[:7]
        yield encoded[7:]


def test_ndjson_ingest_reports_bad_lines_and_keeps_the_good(
    gql: GraphQL, operator: Caller, client: TestClient
) -> None:
    agent, name = _agent(gql, operator), _metric(gql, operator)
    when = _at(2).isoformat()
    raw_uuid = __import__("base64").b64decode(agent).decode().split(":")[1]
    lines: list[Any] = [
        {"agentId": agent, "name": name, "value": 1.5, "time": when},
        "{not json",
        {"agent_id": raw_uuid, "name": name, "value": 2.5, "time": _at(2, 30).isoformat()},
        {"agentId": agent, "name": name},
        "",
        {"agentId": agent, "name": name, "value": 1.5, "time": when},
        {"agentId": agent, "name": name, "value": 3, "time": "2024-01-01T00:00:00"},
        "x" * 70_000,
        '{"agentId": "' + agent + '", "name": "' + name + '", "value": 1e999}',
        {"agentId": agent, "name": name, "value": 4.0, "time": _at(2, 60).isoformat()},
        # PostgreSQL would refuse it, and with it the whole batch.
        {"agentId": agent, "name": name, "value": 5.0, "labels": {"host\u0000": "a"}},
    ]
    response = client.post(
        "/ingest/metrics",
        content=_ndjson(lines),
        headers={**operator.headers, "content-type": "application/x-ndjson"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["accepted"], body["duplicates"], body["rejected"]) == (3, 1, 6)
    assert [(e["line"], e["field"]) for e in body["rejections"]] == [
        (2, None),
        (4, "value"),
        (7, "time"),
        (8, None),
        (9, None if "not JSON" in body["rejections"][4]["reason"] else "value"),
        (11, "labels"),
    ]
    assert "not JSON" in body["rejections"][0]["reason"]
    window = {"from": _at(3).isoformat(), "to": _at(0).isoformat()}
    series = _series(gql, operator, agent, name, **window, aggregate="COUNT")
    assert [p["value"] for p in series["points"]] == [3.0]


@pytest.mark.parametrize("role, status", [(None, 401), ("viewer", 403), ("agent", 403)])
def test_ndjson_ingest_needs_a_recorder(
    client: TestClient, make_caller: Callable[[str], Caller], role: str | None, status: int
) -> None:
    headers = make_caller(role).headers if role else {"x-api-key": "pg_wrong"}
    response = client.post("/ingest/metrics", content=b"{}\n", headers=headers)
    assert response.status_code == status
    if role is None:
        anonymous = client.post("/ingest/metrics", content=b"{}\n")
        assert anonymous.status_code == 401


def test_health_says_which_metrics_path_runs(
    client: TestClient, gql: GraphQL, viewer: Caller
) -> None:
    components = client.get("/health", headers=viewer.headers).json()["components"]
    assert components["metrics"]["status"] == "up"
    assert components["metrics"]["details"]["backend"] == "native"
    health = data(gql("{ health { components { name metricsBackend } } }", caller=viewer))["health"]
    by_name = {c["name"]: c["metricsBackend"] for c in health["components"]}
    assert by_name["metrics"] == "native" and by_name["postgres"] is None


def test_a_recorded_point_reaches_a_subscriber(
    client: TestClient, gql: GraphQL, operator: Caller
) -> None:
    agent, name = _agent(gql, operator), _metric(gql, operator)
    other = _agent(gql, operator)
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(
            json.dumps({"type": "connection_init", "payload": {"apiKey": operator.api_key}})
        )
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription($a: ID, $n: [String!]) { metricRecorded(agentId: $a, names: $n) { agentId name value time labels } }",
                        "variables": {"a": agent, "n": [name]},
                    },
                }
            )
        )
        bus = client.app.state.stores.events  # type: ignore[attr-defined]
        wait_until(lambda: bus.waiting(METRIC_RECORDED_CHANNEL) >= 1, what="the subscription")
        when = _at(1)
        points = [
            {"agentId": other, "name": name, "value": 1.0, "time": when.isoformat()},
            {
                "agentId": agent,
                "name": name,
                "value": 42.0,
                "time": when.isoformat(),
                "labels": {"k": "v"},
            },
        ]
        data(gql(RECORD, {"points": points}, caller=operator))
        message = json.loads(ws.receive_text())
        assert message["type"] == "next", message
        assert message["payload"]["data"]["metricRecorded"] == {
            "agentId": agent,
            "name": name,
            "value": 42.0,
            "time": when.isoformat(),
            "labels": {"k": "v"},
        }
