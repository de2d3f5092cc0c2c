"""claimNextTask, heartbeatTask, fenced moves and taskAvailable, through the gateway."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from starlette.testclient import TestClient
from strawberry import relay

from gateway.app import create_app
from gateway.settings import Settings
from resolvers.tasks import TASK_AVAILABLE_CHANNEL
from stores.redis.events import EventBus
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique
from tests.support.waiting import DEFAULT_LIMIT_S

LOGIN_AS = """mutation($k: String!, $a: ID!) { login(input: {apiKey: $k, agentId: $a}) {
  token userErrors { code } } }"""
CLAIM = """mutation($in: ClaimNextTaskInput!) { claimNextTask(input: $in) {
  task { id title status retryCount assignee { id } } fencingToken leaseExpiresAt
  userErrors { field code message } } }"""
HEARTBEAT = """mutation($id: ID!, $t: Int!) { heartbeatTask(input: {id: $id, fencingToken: $t,
  leaseSeconds: 600}) { leaseExpiresAt task { fencingToken } userErrors { field code } } }"""
START = """mutation($id: ID!, $t: Int) { startTask(input: {id: $id, fencingToken: $t}) {
  task { status } userErrors { field code message } } }"""
COMPLETE = """mutation($id: ID!, $t: Int) { completeTask(input: {id: $id, fencingToken: $t,
  result: {ok: true}}) { task { status } userErrors { field code message } } }"""
HISTORY = "query($id: ID!) { node(id: $id) { ... on Task { status history { type } } } }"


def _agent(gql: GraphQL, operator: Caller, capabilities: list[str] | None = None) -> str:
    created = gql(
        "mutation($n: String!, $c: [String!]!) { createAgent(input: {name: $n,"
        " capabilities: $c}) { agent { id } } }",
        {"n": unique("claimer"), "c": capabilities or []},
        caller=operator,
    )
    agent_id: str = data(created)["createAgent"]["agent"]["id"]
    return agent_id


def _claimer(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller], agent_id: str
) -> dict[str, str]:
    """The least privileged principal that may claim: an agent-role user with a grant,
    in a session bound to the agent."""
    user = make_caller("agent")
    granted = gql(
        "mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a})"
        " { created } }",
        {"u": str(relay.GlobalID("User", user.user_id)), "a": agent_id},
        caller=operator,
    )
    assert data(granted)["grantAgentAccess"]["created"] is True
    login = data(gql(LOGIN_AS, {"k": user.api_key, "a": agent_id}))["login"]
    return {"authorization": f"Bearer {login['token']}"}


def _task(gql: GraphQL, operator: Caller, repository: str, **fields: Any) -> str:
    created = gql(
        "mutation($in: CreateTaskInput!) { createTask(input: $in) { task { id } } }",
        {"in": {"title": unique("work"), "repository": repository, **fields}},
        caller=operator,
    )
    task_id: str = data(created)["createTask"]["task"]["id"]
    return task_id


def _claim(gql: GraphQL, headers: dict[str, str], **given: Any) -> dict[str, Any]:
    claimed: dict[str, Any] = data(gql(CLAIM, {"in": given}, headers=headers))["claimNextTask"]
    return claimed


def _claim_ready(gql: GraphQL, headers: dict[str, str], **given: Any) -> dict[str, Any]:
    """The claim of a task known to be ready. A claim passes a task whose row another
    writer holds at that moment (SKIP LOCKED), and the embedding filler writes each new
    task's embedding: until the claim gets a task, it is asked again."""
    deadline = time.monotonic() + DEFAULT_LIMIT_S
    while True:
        claimed = _claim(gql, headers, **given)
        if claimed["task"] is not None or time.monotonic() > deadline:
            return claimed


def test_only_a_session_bound_to_an_agent_claims(
    gql: GraphQL, operator: Caller, viewer: Caller, make_caller: Callable[[str], Caller]
) -> None:
    repository = unique("repo")
    agent_id = _agent(gql, operator)
    task_id = _task(gql, operator, repository)
    unbound_agent = make_caller("agent")
    for caller in (viewer, unbound_agent, operator):
        refused = gql(CLAIM, {"in": {"repository": repository}}, caller=caller)
        assert error_codes(refused) == ["FORBIDDEN"], caller.role
    assert error_codes(gql(CLAIM, {"in": {"repository": repository}})) == ["UNAUTHENTICATED"]

    bound = _claimer(gql, operator, make_caller, agent_id)
    assert _claim(gql, bound, repository=unique("empty"))["task"] is None
    claimed = _claim_ready(gql, bound, repository=repository)
    assert claimed["task"]["id"] == task_id and claimed["fencingToken"] == 1
    # The grant with the agent's capabilities, the claim, the assignee the answer selects.
    assert gql.last_round_trips["postgres"] == 3
    assert claimed["task"]["assignee"] == {"id": agent_id}
    assert claimed["task"]["status"] == "ASSIGNED" and claimed["leaseExpiresAt"]
    # Heartbeats too: the holder's token alone is not enough.
    for caller in (viewer, unbound_agent, operator):
        refused = gql(HEARTBEAT, {"id": task_id, "t": 1}, caller=caller)
        assert error_codes(refused) == ["FORBIDDEN"], caller.role
    beat = data(gql(HEARTBEAT, {"id": task_id, "t": 1}, headers=bound))["heartbeatTask"]
    assert beat["userErrors"] == [] and beat["leaseExpiresAt"] > claimed["leaseExpiresAt"]
    # Another agent's bound session cannot move the task, even with its token.
    other = _claimer(gql, operator, make_caller, _agent(gql, operator))
    moved = data(gql(START, {"id": task_id, "t": 1}, headers=other))["startTask"]
    assert [e["code"] for e in moved["userErrors"]] == ["CONFLICT"]


def test_bad_claim_inputs_are_refused_with_a_code(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    bound = _claimer(gql, operator, make_caller, _agent(gql, operator))
    for given, field in (
        ({"waitSeconds": 10_000}, "waitSeconds"),
        ({"waitSeconds": -1}, "waitSeconds"),
        ({"leaseSeconds": 0}, "leaseSeconds"),
        ({"capabilities": [str(n) for n in range(101)]}, "capabilities"),
        ({"capabilities": [""]}, "capabilities"),
        ({"repository": "r" * 501}, "repository"),
    ):
        claimed = _claim(gql, bound, **given)
        assert claimed["task"] is None
        assert [(e["field"], e["code"]) for e in claimed["userErrors"]] == [
            (field, "BAD_USER_INPUT")
        ], given


def test_claims_respect_capabilities_and_dependencies(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    repository = unique("repo")
    agent_id = _agent(gql, operator, ["python"])
    bound = _claimer(gql, operator, make_caller, agent_id)
    gpu_task = _task(gql, operator, repository, priority=9, requiredCapabilities=["gpu"])
    first = _task(gql, operator, repository, priority=1)
    waiting = _task(gql, operator, repository, priority=10, requiredCapabilities=["python"])
    gql(
        "mutation($t: ID!, $d: ID!) { addTaskDependency(input: {taskId: $t, dependsOnId: $d})"
        " { changed } }",
        {"t": waiting, "d": first},
        caller=operator,
    )
    # The agent's registered capabilities: python, not gpu; `waiting` waits for `first`.
    claimed = _claim_ready(gql, bound, repository=repository)
    assert claimed["task"]["id"] == first
    assert _claim(gql, bound, repository=repository)["task"] is None
    for mutation in (START, COMPLETE):
        data(gql(mutation, {"id": first, "t": claimed["fencingToken"]}, headers=bound))
    assert _claim_ready(gql, bound, repository=repository)["task"]["id"] == waiting
    assert _claim_ready(gql, bound, repository=repository, capabilities=["gpu"])["task"]["id"] == (
        gpu_task
    )


@pytest.fixture
def claim_gateway(settings: Settings) -> Iterator[TestClient]:
    """A gateway of its own whose sweeper runs each lease out to the end."""
    with TestClient(create_app(settings.model_copy(update={"claim_max_wait_s": 60}))) as client:
        yield client


def _waiting_claimers(client: TestClient) -> int:
    events: EventBus = client.app.state.stores.events  # type: ignore[attr-defined]
    return events.subscribers(TASK_AVAILABLE_CHANNEL)


def _until(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEFAULT_LIMIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_a_waiting_claimer_is_woken_by_a_new_ready_task(
    claim_gateway: TestClient, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    gql = GraphQL(claim_gateway)
    repository = unique("repo")
    bound = _claimer(gql, operator, make_caller, _agent(gql, operator))
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_claim, gql, bound, repository=repository, waitSeconds=55)
        _until(lambda: _waiting_claimers(claim_gateway) == 1)
        task_id = _task(gql, operator, repository)
        claimed = waiting.result(timeout=DEFAULT_LIMIT_S)
    assert claimed["task"]["id"] == task_id and claimed["fencingToken"] == 1


def test_a_dead_claimers_task_is_claimed_again_and_its_late_completion_refused(
    claim_gateway: TestClient, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    gql = GraphQL(claim_gateway)
    repository = unique("repo")
    task_id = _task(gql, operator, repository, maxRetries=1)
    dying = _claimer(gql, operator, make_caller, _agent(gql, operator))
    survivor = _claimer(gql, operator, make_caller, _agent(gql, operator))
    first = _claim_ready(gql, dying, repository=repository, leaseSeconds=1)
    assert first["fencingToken"] == 1
    assert data(gql(START, {"id": task_id, "t": 1}, headers=dying))["startTask"]["task"] == {
        "status": "IN_PROGRESS"
    }
    # The first claimer stops renewing its lease; the next claimer waits for the task
    # to come back (the sweep wakes it), then holds it under a new token.
    second = _claim(gql, survivor, repository=repository, waitSeconds=55, leaseSeconds=600)
    assert second["task"]["id"] == task_id and second["fencingToken"] == 2
    assert second["task"]["retryCount"] == 1

    late = data(gql(COMPLETE, {"id": task_id, "t": 1}, headers=dying))["completeTask"]
    assert [(e["field"], e["code"]) for e in late["userErrors"]] == [("fencingToken", "CONFLICT")]
    assert "stale" in late["userErrors"][0]["message"]
    missing = data(gql(START, {"id": task_id}, headers=survivor))["startTask"]
    assert [(e["field"], e["code"]) for e in missing["userErrors"]] == [
        ("fencingToken", "BAD_USER_INPUT")
    ]
    for mutation in (START, COMPLETE):
        moved = data(gql(mutation, {"id": task_id, "t": 2}, headers=survivor))
        assert next(iter(moved.values()))["userErrors"] == []
    again = data(gql(COMPLETE, {"id": task_id, "t": 2}, headers=survivor))["completeTask"]
    assert [e["code"] for e in again["userErrors"]] == ["CONFLICT"]
    task = data(gql(HISTORY, {"id": task_id}, caller=operator))["node"]
    assert task["status"] == "COMPLETED"
    assert [event["type"] for event in task["history"]] == [
        "created", "claimed", "started", "lease_expired", "claimed", "started", "completed",
    ]  # fmt: skip


def test_task_available_pushes_ready_tasks_to_a_bound_session(
    claim_gateway: TestClient,
    operator: Caller,
    viewer: Caller,
    make_caller: Callable[[str], Caller],
) -> None:
    gql = GraphQL(claim_gateway)
    repository = unique("repo")
    bound = _claimer(gql, operator, make_caller, _agent(gql, operator, ["python"]))
    query = "subscription($r: String) { taskAvailable(repository: $r) { id title fencingToken } }"
    with claim_gateway.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(
            json.dumps({"type": "connection_init", "payload": {"X-Api-Key": viewer.api_key}})
        )
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": query, "variables": {"r": repository}},
                }
            )
        )
        reply = json.loads(ws.receive_text())
        errors = reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]
        assert errors[0]["extensions"]["code"] == "FORBIDDEN"
    with claim_gateway.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
        ws.send_text(json.dumps({"type": "connection_init", "payload": bound}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps(
                {
                    "id": "1",
                    "type": "subscribe",
                    "payload": {"query": query, "variables": {"r": repository}},
                }
            )
        )
        _until(lambda: _waiting_claimers(claim_gateway) == 1)
        _task(gql, operator, repository, requiredCapabilities=["gpu"])
        wanted = _task(gql, operator, repository, requiredCapabilities=["python"])
        message = json.loads(ws.receive_text())
        assert message["type"] == "next"
        assert message["payload"]["data"]["taskAvailable"]["id"] == wanted
        ws.send_text(json.dumps({"id": "1", "type": "complete"}))
