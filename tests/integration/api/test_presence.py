"""Agents' live presence: reportPresence from a bound session, Agent.presence in one Redis
round trip, agentsOnline, presenceChanged on transitions only, and Redis down."""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import redis
from pydantic import SecretStr
from starlette.testclient import TestClient
from strawberry import relay
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.settings import Settings
from stores.redis.presence import PRESENCE_CHANNEL
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique
from tests.support.serving import serve_in_thread, wait_until

LOGIN_AS = """mutation($k: String!, $a: ID!) { login(input: {apiKey: $k, agentId: $a}) {
  token userErrors { code } } }"""
GRANT = """mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) {
  created userErrors { code } } }"""
REPORT = """mutation($activity: String!, $load: Float!, $details: JSON) {
  reportPresence(input: {activity: $activity, load: $load, details: $details}) {
    presence { online activity load lastSeenAt details }
    userErrors { field code }
  }
}"""
PAGE = """query($m: String!) { agents(filter: {nameContains: $m}, orderBy: NAME_ASC) {
  edges { node { name presence { online activity load lastSeenAt } } } } }"""
PAGE_WITHOUT_PRESENCE = """query($m: String!) { agents(filter: {nameContains: $m},
  orderBy: NAME_ASC) { edges { node { name } } } }"""
ONLINE = """query($m: String!) { agentsOnline(filter: {nameContains: $m}) {
  totalCount edges { node { name } } } }"""
CHANGED = """subscription($ids: [ID!]) { presenceChanged(filter: {agentIds: $ids}) {
  change online activity load lastSeenAt agent { id } } }"""


def _agent(gql: GraphQL, operator: Caller, name: str) -> str:
    created = gql(
        "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
        {"n": name},
        caller=operator,
    )
    agent_id: str = data(created)["createAgent"]["agent"]["id"]
    return agent_id


def _bound_session(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller], agent_id: str
) -> dict[str, str]:
    """An agent-role user granted the agent, signed in for it."""
    user = make_caller("agent")
    user_id = str(relay.GlobalID("User", user.user_id))
    granted = data(gql(GRANT, {"u": user_id, "a": agent_id}, caller=operator))
    assert granted["grantAgentAccess"]["userErrors"] == []
    login = data(gql(LOGIN_AS, {"k": user.api_key, "a": agent_id}))["login"]
    return {"authorization": f"Bearer {login['token']}"}


def _report(
    gql: GraphQL, headers: dict[str, str], activity: str, load: float = 0.5, **details: Any
) -> dict[str, Any]:
    body = gql(REPORT, {"activity": activity, "load": load, "details": details}, headers=headers)
    payload: dict[str, Any] = data(body)["reportPresence"]
    return payload


def test_only_an_agents_own_session_reports_its_presence(
    gql: GraphQL, operator: Caller, viewer: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id = _agent(gql, operator, unique("present"))
    variables = {"activity": "coding", "load": 0.5}
    assert error_codes(gql(REPORT, variables)) == ["UNAUTHENTICATED"]

    def refused(caller: Caller) -> list[str]:
        body = gql(REPORT, variables, caller=caller)
        assert body["data"] is None
        return error_codes(body)

    assert refused(viewer) == ["FORBIDDEN"]
    # An agent-role key, or an operator's, is no agent: presence needs a bound session.
    assert refused(make_caller("agent")) == ["FORBIDDEN"]
    assert refused(operator) == ["FORBIDDEN"]

    bound = _bound_session(gql, operator, make_caller, agent_id)
    reported = _report(gql, bound, "coding", 0.25, task="T-1")
    assert reported["userErrors"] == []
    presence = reported["presence"]
    assert presence["online"] is True and presence["activity"] == "coding"
    assert presence["load"] == 0.25 and presence["details"] == {"task": "T-1"}
    assert presence["lastSeenAt"] is not None
    # A heartbeat that changes nothing still answers when it was seen.
    again = _report(gql, bound, "coding", 0.25, task="T-1")["presence"]
    assert again["online"] is True and again["lastSeenAt"] >= presence["lastSeenAt"]


def test_reports_are_bounded(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    bound = _bound_session(gql, operator, make_caller, _agent(gql, operator, unique("bounded")))
    for variables, field in (
        ({"activity": "", "load": 0.5}, "activity"),
        ({"activity": "x" * 201, "load": 0.5}, "activity"),
        ({"activity": "coding", "load": 1.5}, "load"),
        ({"activity": "coding", "load": 0.5, "details": {"log": "x" * 5000}}, "details"),
        ({"activity": "coding", "load": 0.5, "details": [1, 2]}, "details"),
    ):
        payload = data(gql(REPORT, variables, headers=bound))["reportPresence"]
        assert payload == {
            "presence": None,
            "userErrors": [{"field": field, "code": "BAD_USER_INPUT"}],
        }, variables


def test_a_page_of_agents_reads_presence_in_one_redis_round_trip(
    gql: GraphQL,
    operator: Caller,
    viewer: Caller,
    make_caller: Callable[[str], Caller],
) -> None:
    marker = unique("page")
    ids = [_agent(gql, operator, f"{marker}-{n}") for n in range(4)]
    for agent_id, activity in zip(ids[:2], ("coding", "reviewing"), strict=True):
        _report(gql, _bound_session(gql, operator, make_caller, agent_id), activity)

    data(gql(PAGE_WITHOUT_PRESENCE, {"m": marker}, caller=viewer))
    without = gql.last_round_trips.get("redis", 0)
    body = data(gql(PAGE, {"m": marker}, caller=viewer))
    assert gql.last_round_trips.get("redis", 0) == without + 1
    nodes = [edge["node"] for edge in body["agents"]["edges"]]
    assert [(n["presence"]["online"], n["presence"]["activity"]) for n in nodes] == [
        (True, "coding"),
        (True, "reviewing"),
        (False, None),
        (False, None),
    ]
    assert nodes[2]["presence"] == {
        "online": False,
        "activity": None,
        "load": None,
        "lastSeenAt": None,
    }

    online = data(gql(ONLINE, {"m": marker}, caller=viewer))["agentsOnline"]
    assert online["totalCount"] == 2
    assert [edge["node"]["name"] for edge in online["edges"]] == [f"{marker}-0", f"{marker}-1"]
    assert error_codes(gql(ONLINE, {"m": marker})) == ["UNAUTHENTICATED"]


def test_details_are_for_the_agent_itself_and_operators(
    gql: GraphQL, operator: Caller, viewer: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id = _agent(gql, operator, unique("details"))
    bound = _bound_session(gql, operator, make_caller, agent_id)
    _report(gql, bound, "coding", branch="feature-x")
    query = """query($id: ID!) { node(id: $id) { ... on Agent { name presence {
      online details } } } }"""

    seen_by_viewer = gql(query, {"id": agent_id}, caller=viewer)
    assert error_codes(seen_by_viewer) == ["FORBIDDEN"]
    # Only the details are withheld: the viewer still sees that the agent is online.
    assert seen_by_viewer["data"]["node"]["presence"] == {"online": True, "details": None}
    assert seen_by_viewer["data"]["node"]["name"]
    for headers in (bound, operator.headers):
        seen = data(gql(query, {"id": agent_id}, headers=headers))["node"]["presence"]
        assert seen == {"online": True, "details": {"branch": "feature-x"}}
    # Another agent's own session is no operator.
    other = _bound_session(gql, operator, make_caller, _agent(gql, operator, unique("other")))
    assert error_codes(gql(query, {"id": agent_id}, headers=other)) == ["FORBIDDEN"]


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_redis_down_nulls_presence_and_keeps_the_rest(
    settings: Settings, gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    marker = unique("noredis")
    _agent(gql, operator, marker)
    no_redis = settings.model_copy(
        update={
            "redis_url": SecretStr(f"redis://127.0.0.1:{_closed_port()}/0"),
            "redis_connect_timeout_s": 0.2,
        }
    )
    with TestClient(create_app(no_redis)) as client:
        body = client.post(
            "/graphql",
            json={
                "query": PAGE.replace("presence", "id presence").replace(
                    "{ agents", "{ online: agentsOnline { totalCount } agents"
                ),
                "variables": {"m": marker},
            },
            headers=viewer.headers,
        ).json()
    assert body["data"]["online"] is None
    (node,) = [edge["node"] for edge in body["data"]["agents"]["edges"]]
    assert node["name"] == marker and node["id"] and node["presence"] is None
    assert sorted((e["path"][0], e["extensions"]["code"]) for e in body["errors"]) == [
        ("agents", "STORE_UNAVAILABLE"),
        ("online", "STORE_UNAVAILABLE"),
    ]


@contextmanager
def _short_lived_gateway(settings: Settings) -> Iterator[tuple[str, str]]:
    """A gateway whose agents go offline after a second without a heartbeat, with an
    events namespace of its own; yields its URL and the channel it announces on."""
    namespace = unique("presence-test")
    quick = settings.model_copy(
        update={
            "presence_offline_after_s": 1.0,
            "presence_sweep_s": 0.1,
            "events_namespace": namespace,
        }
    )
    with serve_in_thread(create_app(quick)) as url:
        yield url, f"{namespace}:{PRESENCE_CHANNEL}"


def _post(url: str, query: str, variables: dict[str, Any], headers: dict[str, str]) -> Any:
    body = httpx2.post(
        f"{url}/graphql",
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=30,
    ).json()
    return data(body)


def _next_change(ws: ClientConnection) -> dict[str, Any]:
    message = json.loads(ws.recv(timeout=30))
    assert message["type"] == "next", message
    change: dict[str, Any] = message["payload"]["data"]["presenceChanged"]
    return change


def test_transitions_are_announced_and_heartbeats_are_not(
    settings: Settings,
    gql: GraphQL,
    operator: Caller,
    viewer: Caller,
    make_caller: Callable[[str], Caller],
) -> None:
    agent_id = _agent(gql, operator, unique("live"))
    bound = _bound_session(gql, operator, make_caller, agent_id)
    with (
        _short_lived_gateway(settings) as (url, channel),
        connect(
            url.replace("http", "ws") + "/graphql",
            subprotocols=[Subprotocol("graphql-transport-ws")],
        ) as ws,
        redis.Redis.from_url(settings.redis_url.get_secret_value()) as watcher,
    ):
        ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}}))
        assert json.loads(ws.recv(timeout=30))["type"] == "connection_ack"
        ws.send(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": CHANGED, "variables": {"ids": [agent_id]}},
                }
            )
        )
        wait_until(
            lambda: dict(watcher.pubsub_numsub(channel)).get(channel.encode(), 0) > 0,
            what="the subscription to reach Redis",
        )

        def report(activity: str) -> None:
            _post(url, REPORT, {"activity": activity, "load": 0.5}, bound)

        report("coding")
        came = _next_change(ws)
        assert (came["change"], came["online"], came["activity"]) == ("ONLINE", True, "coding")
        assert came["agent"] == {"id": agent_id}
        # A heartbeat that changes nothing is not announced: the next event is the new
        # activity.
        report("coding")
        report("reviewing")
        changed = _next_change(ws)
        assert (changed["change"], changed["activity"]) == ("ACTIVITY", "reviewing")
        # No more heartbeats: the sweep notices within a second or so.
        went = _next_change(ws)
        assert (went["change"], went["online"], went["activity"]) == ("OFFLINE", False, None)
        assert went["lastSeenAt"] is not None

        presence = _post(
            url,
            "query($id: ID!) { node(id: $id) { ... on Agent { presence { online lastSeenAt } } } }",
            {"id": agent_id},
            viewer.headers,
        )["node"]["presence"]
        assert presence == {"online": False, "lastSeenAt": went["lastSeenAt"]}
        # Back again: announced as online.
        report("coding")
        back = _next_change(ws)
        assert (back["change"], back["online"]) == ("ONLINE", True)
