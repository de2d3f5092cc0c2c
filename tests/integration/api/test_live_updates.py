"""Subscriptions: an event raised on one gateway process reaches a subscriber on another."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import httpx2
import pytest
import redis
from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.settings import Settings
from resolvers.agents import AGENT_STATUS_CHANNEL
from resolvers.metrics import METRIC_RECORDED_CHANNEL
from resolvers.tasks import TASK_UPDATED_CHANNEL
from stores import PostgresStore, roundtrips
from tests.integration.api.conftest import Caller, GraphQL, data, unique
from tests.support.serving import free_port, serve_in_thread, wait_until


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "POLYGRAPH_POSTGRES_DSN": settings.postgres_dsn.get_secret_value(),
        "POLYGRAPH_NEO4J_URI": settings.neo4j_uri,
        "POLYGRAPH_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "POLYGRAPH_REDIS_URL": settings.redis_url.get_secret_value(),
        "POLYGRAPH_EVENTS_NAMESPACE": settings.events_namespace,
        "POLYGRAPH_LOG_LEVEL": "warning",
    }


@contextmanager
def gateway_process(settings: Settings, **env: str) -> Iterator[str]:
    """A real `polygraph serve` in its own process (`env`: more of its environment);
    yields its base URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
        env={**_env(settings), **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{base}/health/live", timeout=1).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                _, err = proc.communicate(timeout=5)
                pytest.fail(f"gateway on port {port} did not start:\n{err.decode()[-2000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()


def _subscribe(ws: ClientConnection, query: str, variables: dict[str, Any]) -> None:
    ws.send(
        json.dumps(
            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}
        )
    )


def _next(ws: ClientConnection, timeout: float = 10.0) -> dict[str, Any]:
    while True:
        message = json.loads(ws.recv(timeout=timeout))
        if message["type"] in ("next", "error", "complete"):
            result: dict[str, Any] = message
            return result


def _post(base: str, caller: Caller, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    response = httpx2.post(
        f"{base}/graphql",
        json={"query": query, "variables": variables},
        headers=caller.headers,
        timeout=10,
    )
    body: dict[str, Any] = response.json()
    return data(body)


def _create_agent(base: str, caller: Caller, prefix: str) -> dict[str, Any]:
    created = _post(
        base,
        caller,
        "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
        {"n": unique(prefix)},
    )
    agent: dict[str, Any] = created["createAgent"]["agent"]
    return agent


def _assigned_task(base: str, caller: Caller, prefix: str, title: str) -> dict[str, Any]:
    """A new task, assigned to a new agent (so that it can be started)."""
    agent = _create_agent(base, caller, prefix)
    created = _post(
        base,
        caller,
        "mutation($t: String!, $a: ID!) { createTask(input: {title: $t, assigneeId: $a})"
        " { task { id } } }",
        {"t": title, "a": agent["id"]},
    )
    task: dict[str, Any] = created["createTask"]["task"]
    return task


def test_task_and_agent_events_cross_gateway_processes(
    settings: Settings, gql: GraphQL, operator: Caller
) -> None:
    with gateway_process(settings) as first, gateway_process(settings) as second:
        agent = _post(
            second,
            operator,
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            {"n": unique("live")},
        )["createAgent"]["agent"]
        task = _post(
            second,
            operator,
            'mutation($a: ID!) { createTask(input: {title: "watch me", assigneeId: $a}) { task { id } } }',
            {"a": agent["id"]},
        )["createTask"]["task"]

        ws_url = first.replace("http", "ws") + "/graphql"
        with connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            ws.send(
                json.dumps({"type": "connection_init", "payload": {"apiKey": operator.api_key}})
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            before = _redis_subscribers(settings, _channel(settings, TASK_UPDATED_CHANNEL))
            _subscribe(
                ws,
                "subscription($ids: [ID!]) { taskUpdated(filter: {taskIds: $ids}) { change task { id status } } }",
                {"ids": [task["id"]]},
            )
            # Events flow once Redis has the first gateway's subscription.
            _wait_for_redis_subscriber(settings, TASK_UPDATED_CHANNEL, before)
            _post(
                second,
                operator,
                "mutation($id: ID!) { startTask(input: {id: $id}) { task { id } } }",
                {"id": task["id"]},
            )
            event = _next(ws)
            assert event["type"] == "next", event
            assert event["payload"]["data"]["taskUpdated"] == {
                "change": "started",
                "task": {"id": task["id"], "status": "IN_PROGRESS"},
            }

        with connect(ws_url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
            ws.send(
                json.dumps({"type": "connection_init", "payload": {"apiKey": operator.api_key}})
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            before = _redis_subscribers(settings, _channel(settings, AGENT_STATUS_CHANNEL))
            _subscribe(
                ws,
                "subscription($ids: [ID!]) { agentStatusChanged(filter: {agentIds: $ids}) { previousStatus agent { id status } } }",
                {"ids": [agent["id"]]},
            )
            _wait_for_redis_subscriber(settings, AGENT_STATUS_CHANNEL, before)
            _post(
                second,
                operator,
                "mutation($id: ID!) { updateAgent(input: {id: $id, status: BUSY}) { agent { id } } }",
                {"id": agent["id"]},
            )
            event = _next(ws)
            assert event["payload"]["data"]["agentStatusChanged"] == {
                "previousStatus": "IDLE",
                "agent": {"id": agent["id"], "status": "BUSY"},
            }


def test_websocket_messages_are_compressed_only_when_the_setting_says_so(
    settings: Settings, operator: Caller
) -> None:
    def negotiated(base: str) -> str | None:
        ws_url = base.replace("http", "ws") + "/graphql"
        # The client offers permessage-deflate, as browsers do.
        with connect(
            ws_url, subprotocols=[Subprotocol("graphql-transport-ws")], compression="deflate"
        ) as ws:
            ws.send(
                json.dumps({"type": "connection_init", "payload": {"apiKey": operator.api_key}})
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            assert ws.response is not None
            extensions: str | None = ws.response.headers.get("Sec-WebSocket-Extensions")
            return extensions

    with (
        gateway_process(settings) as plain,
        gateway_process(settings, POLYGRAPH_WS_COMPRESSION="true") as compressing,
    ):
        assert negotiated(plain) is None
        assert (negotiated(compressing) or "").startswith("permessage-deflate")


def test_subscriptions_need_a_valid_sign_in(settings: Settings, gql: GraphQL) -> None:
    client = gql.client
    # A credential that is not a string is refused too, not taken for none.
    for payload in ({"apiKey": "pg_wrong"}, {"apiKey": 5}, {"authorization": ["Bearer x"]}):
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_text(json.dumps({"type": "connection_init", "payload": payload}))
            message = ws.receive()
            assert message["type"] == "websocket.close"
            assert message["code"] == 4403
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init"}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": "subscription { taskUpdated { change } }"},
                }
            )
        )
        reply = json.loads(ws.receive_text())
        assert reply["type"] in ("error", "next")
        errors = reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_websocket_signs_in_with_header_spelled_connection_params(
    gql: GraphQL, viewer: Caller
) -> None:
    # GraphiQL sends its headers editor's contents as the connection_init payload
    # (tests/integration/test_graphiql_browser.py runs it in a browser).
    client = gql.client
    with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(
            json.dumps({"type": "connection_init", "payload": {"X-Api-Key": viewer.api_key}})
        )
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {
                        "query": "subscription { healthUpdates(intervalSeconds: 0.1) { status } }"
                    },
                }
            )
        )
        assert json.loads(ws.receive_text())["type"] == "next"
        ws.send_text(json.dumps({"id": "1", "type": "complete"}))


class _CountPerWebSocket:
    """Counts store round trips per WebSocket connection, as the gateway does per HTTP
    request. A DataLoader batch lands in the counter of the connection whose load
    scheduled it, so the sum over connections is what all subscribers cost together."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.counters: list[Counter[str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        with roundtrips.counting() as counter:
            self.counters.append(counter)
            await self.app(scope, receive, send)

    def total(self) -> Counter[str]:
        return sum(self.counters, Counter[str]())


def _channel(settings: Settings, channel: str) -> str:
    return f"{settings.events_namespace}:{channel}"


def _wait_for_redis_subscriber(settings: Settings, channel: str, before: int) -> None:
    """Return once Redis counts one more subscriber to `channel` than `before`."""
    full = _channel(settings, channel)
    wait_until(lambda: _redis_subscribers(settings, full) > before, what=f"a subscriber on {full}")


def _redis_subscribers(settings: Settings, channel: str) -> int:
    client = redis.Redis.from_url(settings.redis_url.get_secret_value())
    try:
        ((_, count),) = client.pubsub_numsub(channel)
        return int(count)
    finally:
        client.close()


TASK_UPDATES = "subscription($ids: [ID!]) { taskUpdated(filter: {taskIds: $ids}) { change task { id status } } }"


def test_subscribers_of_one_event_share_one_task_fetch(
    settings: Settings, operator: Caller
) -> None:
    # Its own events namespace: the Redis check below then sees this gateway's bus alone.
    namespace = unique("polygraph-test-shared")
    app = create_app(settings.model_copy(update={"events_namespace": namespace}))
    counted = _CountPerWebSocket(app)
    with serve_in_thread(counted) as base, ExitStack() as sockets:
        task = _assigned_task(base, operator, "shared", "watched")

        # Three connections with two subscriptions each: six subscribers in one process.
        operations = ("a", "b")
        connections: list[ClientConnection] = []
        ws_url = base.replace("http", "ws") + "/graphql"
        for _ in range(3):
            ws = _signed_in(ws_url, operator, sockets)
            for operation in operations:
                payload = {"query": TASK_UPDATES, "variables": {"ids": [task["id"]]}}
                ws.send(json.dumps({"id": operation, "type": "subscribe", "payload": payload}))
            connections.append(ws)
        bus = app.state.stores.events
        wait_until(
            lambda: (
                bus.subscribers(TASK_UPDATED_CHANNEL) == 6
                and _redis_subscribers(settings, f"{namespace}:{TASK_UPDATED_CHANNEL}") == 1
            ),
            what="six subscribers behind one Redis subscription",
        )

        # Twice: the second event must read the task afresh, not from the first one's cache.
        for mutation, change, status in (
            ("startTask(input: {id: $id})", "started", "IN_PROGRESS"),
            ("completeTask(input: {id: $id})", "completed", "COMPLETED"),
        ):
            before = counted.total()
            _post(
                base,
                operator,
                f"mutation($id: ID!) {{ {mutation} {{ task {{ id }} }} }}",
                {"id": task["id"]},
            )
            expected = {"change": change, "task": {"id": task["id"], "status": status}}
            costs = []
            for ws in connections:
                received = {}
                for _ in operations:
                    message = _next(ws)
                    assert message["type"] == "next", message
                    received[message["id"]] = message["payload"]["data"]["taskUpdated"]
                    costs.append(message["payload"]["extensions"]["cost"])
                assert received == dict.fromkeys(operations, expected)
            # Each subscriber's own cost report, of the one result: taskUpdated and task.
            assert costs == [{"requested": 2, "actual": 2, "maximum": 25_000}] * 6
            # Six subscribers of one event cost one PostgreSQL round trip, not six.
            assert counted.total() - before == Counter(postgres=1)


def _signed_in(url: str, caller: Caller, sockets: ExitStack) -> ClientConnection:
    ws = sockets.enter_context(connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]))
    ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": caller.api_key}}))
    assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
    return ws


def _next_by_id(ws: ClientConnection, count: int) -> dict[str, dict[str, Any]]:
    messages = [_next(ws) for _ in range(count)]
    assert all(message["type"] == "next" for message in messages), messages
    return {message["id"]: message["payload"] for message in messages}


def test_one_subscriber_answers_each_event_for_the_others_of_its_operation(
    settings: Settings, operator: Caller
) -> None:
    namespace = unique("polygraph-test-answers")
    app = create_app(settings.model_copy(update={"events_namespace": namespace}))
    with serve_in_thread(app) as base, ExitStack() as sockets:
        task = _assigned_task(base, operator, "answers", "watched")
        ws_url = base.replace("http", "ws") + "/graphql"
        first, second = _signed_in(ws_url, operator, sockets), _signed_in(ws_url, operator, sockets)
        bus = app.state.stores.events
        watched = {"ids": [task["id"]]}
        more = TASK_UPDATES.replace("{ change task", "{ change at task")

        def subscribe(ws: ClientConnection, operation: str, query: str) -> None:
            payload = {"query": query, "variables": watched}
            ws.send(json.dumps({"id": operation, "type": "subscribe", "payload": payload}))

        # "a" comes first and leads; "b" asks the same (on another connection) and
        # follows; "c" asks for more and answers for itself.
        subscribe(first, "a", TASK_UPDATES)
        wait_until(lambda: bus.waiting(TASK_UPDATED_CHANNEL) == 1, what="the first subscriber")
        subscribe(second, "b", TASK_UPDATES)
        subscribe(second, "c", more)
        wait_until(lambda: bus.waiting(TASK_UPDATED_CHANNEL) == 3, what="three subscribers")
        answered = bus.answered_for_followers
        # The executor's sharing scope says whose answers are alike; graphql-core's has none.
        shared = 0 if settings.executor == "stock" else 1

        _post(
            base,
            operator,
            "mutation($id: ID!) { startTask(input: {id: $id}) { task { id } } }",
            {"id": task["id"]},
        )
        started = {"change": "started", "task": {"id": task["id"], "status": "IN_PROGRESS"}}
        led = _next_by_id(first, 1)["a"]
        others = _next_by_id(second, 2)
        assert led["data"]["taskUpdated"] == started
        assert others["b"] == led  # the same answer, cost report included
        assert others["c"]["data"]["taskUpdated"].keys() == {"change", "at", "task"}
        assert bus.answered_for_followers == answered + shared

        # The leader's operation ends; the follower's carries on, answering for itself.
        first.send(json.dumps({"id": "a", "type": "complete"}))
        wait_until(
            lambda: bus.subscribers(TASK_UPDATED_CHANNEL) == bus.waiting(TASK_UPDATED_CHANNEL) == 2,
            what="two subscribers left",
        )
        _post(
            base,
            operator,
            "mutation($id: ID!) { completeTask(input: {id: $id}) { task { id } } }",
            {"id": task["id"]},
        )
        after = _next_by_id(second, 2)
        assert after["b"]["data"]["taskUpdated"]["task"]["status"] == "COMPLETED"
        assert after["c"]["data"]["taskUpdated"]["change"] == "completed"
        assert bus.answered_for_followers == answered + shared


def test_an_answer_with_errors_is_each_subscribers_own(
    settings: Settings, operator: Caller
) -> None:
    # Errors name the request that met them: with Neo4j away, a task's `blockers` is
    # null with an error, and each subscriber answers such an event itself.
    no_graph = settings.model_copy(
        update={
            "events_namespace": unique("polygraph-test-errors"),
            "neo4j_uri": f"bolt://127.0.0.1:{free_port()}",
            "projection_wait_s": 0.2,
        }
    )
    app = create_app(no_graph)
    with serve_in_thread(app) as base, ExitStack() as sockets:
        # A probe finds Neo4j down: graph reads then fail at once, not after retrying.
        health = httpx2.get(f"{base}/health", headers=operator.headers, timeout=30).json()
        assert health["components"]["neo4j"]["status"] == "down"
        task = _assigned_task(base, operator, "blocked", "blocked?")
        ws_url = base.replace("http", "ws") + "/graphql"
        connections = [_signed_in(ws_url, operator, sockets) for _ in range(2)]
        query = TASK_UPDATES.replace("task { id status }", "task { id blockers { id } }")
        for ws in connections:
            payload = {"query": query, "variables": {"ids": [task["id"]]}}
            ws.send(json.dumps({"id": "t", "type": "subscribe", "payload": payload}))
        bus = app.state.stores.events
        wait_until(lambda: bus.waiting(TASK_UPDATED_CHANNEL) == 2, what="two subscribers")
        answered = bus.answered_for_followers
        _post(
            base,
            operator,
            "mutation($id: ID!) { startTask(input: {id: $id}) { task { id } } }",
            {"id": task["id"]},
        )
        for ws in connections:
            answer = _next_by_id(ws, 1)["t"]
            assert answer["data"]["taskUpdated"]["task"] == {"id": task["id"], "blockers": None}
            assert [e["extensions"]["code"] for e in answer["errors"]] == ["STORE_UNAVAILABLE"]
        assert bus.answered_for_followers == answered


def test_every_point_of_an_event_reaches_every_subscriber_of_one_operation(
    settings: Settings, operator: Caller
) -> None:
    # One event, several points: a subscription that yields several values per event
    # answers for itself, even beside another with the same document and variables.
    app = create_app(settings.model_copy(update={"events_namespace": unique("polygraph-pts")}))
    with serve_in_thread(app) as base, ExitStack() as sockets:
        agent = _create_agent(base, operator, "points")["id"]
        name = unique("m").replace("-", "_")
        _post(
            base,
            operator,
            'mutation($n: String!) { registerMetric(input: {name: $n, unit: "ratio",'
            ' description: "test"}) { metric { name } } }',
            {"n": name},
        )
        ws = _signed_in(base.replace("http", "ws") + "/graphql", operator, sockets)
        query = "subscription($a: ID) { metricRecorded(agentId: $a) { name value } }"
        for operation in ("1", "2"):
            payload = {"query": query, "variables": {"a": agent}}
            ws.send(json.dumps({"id": operation, "type": "subscribe", "payload": payload}))
        bus = app.state.stores.events
        wait_until(lambda: bus.waiting(METRIC_RECORDED_CHANNEL) == 2, what="two subscriptions")
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        points = [
            {
                "agentId": agent,
                "name": name,
                "value": value,
                "time": (hour - timedelta(seconds=n)).isoformat(),
            }
            for n, value in enumerate((1.0, 2.0, 3.0))
        ]
        _post(
            base,
            operator,
            "mutation($p: [MetricPointInput!]!) { recordMetrics(input: {points: $p}) { accepted } }",
            {"p": points},
        )
        received: dict[str, list[float]] = {"1": [], "2": []}
        for _ in range(6):
            message = _next(ws)
            assert message["type"] == "next", message
            received[message["id"]].append(message["payload"]["data"]["metricRecorded"]["value"])
        assert received == {"1": [1.0, 2.0, 3.0], "2": [1.0, 2.0, 3.0]}


AGENT_NODE = "query($id: ID!) { node(id: $id) { ... on Agent { status version } } }"


def test_an_event_that_outruns_the_cache_notice_shows_its_own_change(
    settings: Settings, operator: Caller
) -> None:
    # Redis and PostgreSQL deliver apart: another replica's event can reach this one
    # before the notice that drops its cached copy of the row. Played out exactly: the
    # row changes with its trigger off (no notice, ever) and the event is published by
    # hand, as the writing replica would.
    namespace = unique("polygraph-test-outrun")
    cached = settings.model_copy(
        update={"events_namespace": namespace, "cache_enabled": True, "cache_agent_ttl_s": 3600}
    )
    app = create_app(cached)
    with serve_in_thread(app) as base:
        agent = _post(
            base,
            operator,
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id name } } }",
            {"n": unique("outrun")},
        )["createAgent"]["agent"]
        cached_copy = _post(base, operator, AGENT_NODE, {"id": agent["id"]})["node"]
        assert cached_copy["status"] == "IDLE"
        raw_id = UUID(base64.b64decode(agent["id"]).decode().split(":", 1)[1])

        async def change_without_notice() -> int:
            async with (
                PostgresStore(settings.postgres_options()) as postgres,
                postgres.connection() as conn,
            ):
                await conn.execute("SET session_replication_role = replica")
                version: int = await conn.fetchval(
                    "UPDATE agents SET status = 'busy', version = version + 1"
                    " WHERE id = $1 RETURNING version",
                    raw_id,
                )
                return version

        version = asyncio.run(change_without_notice())
        # The gateway still serves its copy: no notice came.
        assert _post(base, operator, AGENT_NODE, {"id": agent["id"]})["node"] == cached_copy

        ws_url = base.replace("http", "ws") + "/graphql"
        with connect(ws_url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            ws.send(
                json.dumps({"type": "connection_init", "payload": {"apiKey": operator.api_key}})
            )
            assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
            _subscribe(
                ws,
                "subscription($ids: [ID!]) { agentStatusChanged(filter: {agentIds: $ids})"
                " { previousStatus agent { status version } } }",
                {"ids": [agent["id"]]},
            )
            bus = app.state.stores.events
            wait_until(lambda: bus.subscribers(AGENT_STATUS_CHANNEL) == 1, what="the subscription")
            publisher = redis.Redis.from_url(settings.redis_url.get_secret_value())
            try:
                event = {
                    "agent_id": str(raw_id),
                    "name": agent["name"],
                    "status": "busy",
                    "previous_status": "idle",
                    "version": version,
                    "at": "2026-01-01T00:00:00+00:00",
                }
                publisher.publish(_channel(cached, AGENT_STATUS_CHANNEL), json.dumps(event))
            finally:
                publisher.close()
            message = _next(ws)
            assert message["type"] == "next", message
            assert message["payload"]["data"]["agentStatusChanged"] == {
                "previousStatus": "IDLE",
                "agent": {"status": "BUSY", "version": version},
            }
