"""Tasks over HTTP: the state machine's verbs, dependencies, history and blockers."""

from __future__ import annotations

import uuid

import pytest
from strawberry import relay

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

TASK_FIELDS = "id status version retryCount assignee { id } history { version type }"


def _create_task(gql: GraphQL, caller: Caller, **fields: object) -> dict[str, object]:
    body = gql(
        f"""mutation($input: CreateTaskInput!) {{ createTask(input: $input) {{
            task {{ {TASK_FIELDS} }} userErrors {{ field code message }} projected }} }}""",
        {"input": {"title": unique("task"), **fields}},
        caller=caller,
    )
    payload = data(body)["createTask"]
    assert payload["userErrors"] == [], payload["userErrors"]
    task: dict[str, object] = payload["task"]
    return task


def _agent(gql: GraphQL, caller: Caller) -> str:
    body = gql(
        "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
        {"n": unique("worker")},
        caller=caller,
    )
    agent_id: str = data(body)["createAgent"]["agent"]["id"]
    return agent_id


def _move(gql: GraphQL, caller: Caller, verb: str, task_id: object, **extra: object) -> dict:  # type: ignore[type-arg]
    input_type = {
        "assignTask": "AssignTaskInput",
        "completeTask": "CompleteTaskInput",
        "failTask": "FailTaskInput",
    }.get(verb, "TaskMoveInput")
    body = gql(
        f"""mutation($input: {input_type}!) {{ {verb}(input: $input) {{
            task {{ {TASK_FIELDS} }} userErrors {{ field code message }} }} }}""",
        {"input": {"id": task_id, **extra}},
        caller=caller,
    )
    result: dict = data(body)[verb]  # type: ignore[type-arg]
    return result


def test_a_task_walks_its_lifecycle_and_keeps_its_history(gql: GraphQL, operator: Caller) -> None:
    agent_id = _agent(gql, operator)
    task = _create_task(gql, operator, priority=7)
    assert task["status"] == "PENDING"
    assigned = _move(gql, operator, "assignTask", task["id"], assigneeId=agent_id)["task"]
    assert assigned["status"] == "ASSIGNED" and assigned["assignee"] == {"id": agent_id}
    started = _move(gql, operator, "startTask", task["id"])["task"]
    failed = _move(gql, operator, "failTask", task["id"], errorMessage="flaky network")["task"]
    retried = _move(gql, operator, "retryTask", task["id"])["task"]
    assert (started["status"], failed["status"], retried["status"]) == (
        "IN_PROGRESS",
        "FAILED",
        "PENDING",
    )
    assert retried["retryCount"] == 1
    assert [e["type"] for e in retried["history"]] == [
        "created",
        "assigned",
        "started",
        "failed",
        "retried",
    ]
    assert [e["version"] for e in retried["history"]] == [1, 2, 3, 4, 5]


@pytest.mark.parametrize(
    ("verb", "extra"),
    [("startTask", {}), ("completeTask", {"result": {"ok": True}}), ("retryTask", {})],
)
def test_illegal_moves_from_pending_are_conflicts(
    gql: GraphQL, operator: Caller, verb: str, extra: dict[str, object]
) -> None:
    task = _create_task(gql, operator)
    result = _move(gql, operator, verb, task["id"], **extra)
    assert result["task"] is None
    assert result["userErrors"][0]["code"] == "CONFLICT"


def test_stale_version_and_unknown_task(gql: GraphQL, operator: Caller) -> None:
    task = _create_task(gql, operator)
    stale = _move(gql, operator, "cancelTask", task["id"], expectedVersion=7)
    assert stale["userErrors"][0]["code"] == "CONFLICT"
    assert "version" in stale["userErrors"][0]["message"]
    cancelled = _move(gql, operator, "cancelTask", task["id"], expectedVersion=1)
    assert cancelled["task"]["status"] == "CANCELLED"
    missing = _move(gql, operator, "cancelTask", str(relay.GlobalID("Task", str(uuid.uuid4()))))
    assert missing["userErrors"][0]["code"] == "NOT_FOUND"


def test_title_length_is_checked(gql: GraphQL, operator: Caller) -> None:
    body = gql(
        'mutation { createTask(input: {title: ""}) { task { id } userErrors { field code } } }',
        caller=operator,
    )
    assert data(body)["createTask"]["userErrors"] == [{"field": "title", "code": "BAD_USER_INPUT"}]


def test_a_dependency_that_closes_a_cycle_is_refused_naming_it(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    a, b, c = (_create_task(gql, operator) for _ in range(3))
    add = """mutation($t: ID!, $d: ID!) { addTaskDependency(input: {taskId: $t, dependsOnId: $d}) {
               changed projected userErrors { code message } } }"""
    assert (
        data(gql(add, {"t": a["id"], "d": b["id"]}, caller=operator))["addTaskDependency"][
            "userErrors"
        ]
        == []
    )
    data(gql(add, {"t": b["id"], "d": c["id"]}, caller=operator))
    refused = data(gql(add, {"t": c["id"], "d": a["id"]}, caller=operator))["addTaskDependency"]
    assert refused["userErrors"][0]["code"] == "CONFLICT"
    assert "cycle" in refused["userErrors"][0]["message"]

    query = """query($id: ID!) { node(id: $id) { ... on Task {
                 dependencies { id } blockers { id } } } }"""
    task_a = data(gql(query, {"id": a["id"]}, caller=operator))["node"]
    assert task_a["dependencies"] == [{"id": b["id"]}]
    assert {t["id"] for t in task_a["blockers"]} == {b["id"], c["id"]}
    # Every dependent, and at most `first` in id order; a viewer reads them too.
    dependents = data(
        gql(
            """query($id: ID!) { all: taskDependents(taskId: $id) { id }
                 first: taskDependents(taskId: $id, first: 1) { id } }""",
            {"id": c["id"]},
            caller=viewer,
        )
    )
    assert {t["id"] for t in dependents["all"]} == {a["id"], b["id"]}
    by_id = sorted((a["id"], b["id"]), key=lambda g: relay.from_base64(str(g))[1])
    assert dependents["first"] == [{"id": by_id[0]}]
    path = data(
        gql(
            "query($id: ID!) { criticalPath(taskId: $id) { totalEstimate tasks { id } } }",
            {"id": a["id"]},
            caller=operator,
        )
    )["criticalPath"]
    assert [t["id"] for t in path["tasks"]] == [c["id"], b["id"]]


def test_idempotency_key_makes_a_retry_write_once(gql: GraphQL, operator: Caller) -> None:
    key = unique("idem")
    title = unique("once")
    first = _create_task(gql, operator, title=title, idempotencyKey=key)
    again = _create_task(gql, operator, title=title, idempotencyKey=key)
    assert first["id"] == again["id"]
    body = gql(
        "query($t: String!) { tasks(filter: {titleContains: $t}) { totalCount } }",
        {"t": title},
        caller=operator,
    )
    assert data(body)["tasks"]["totalCount"] == 1


def test_viewers_cannot_create_tasks(gql: GraphQL, viewer: Caller) -> None:
    body = gql('mutation { createTask(input: {title: "x"}) { task { id } } }', caller=viewer)
    assert error_codes(body) == ["FORBIDDEN"]


def test_adding_an_existing_dependency_changes_nothing(gql: GraphQL, operator: Caller) -> None:
    a, b = _create_task(gql, operator), _create_task(gql, operator)
    add = """mutation($t: ID!, $d: ID!) { addTaskDependency(input: {taskId: $t, dependsOnId: $d}) {
               changed task { version } userErrors { code } } }"""
    first = data(gql(add, {"t": a["id"], "d": b["id"]}, caller=operator))["addTaskDependency"]
    again = data(gql(add, {"t": a["id"], "d": b["id"]}, caller=operator))["addTaskDependency"]
    assert first == {"changed": True, "task": {"version": 2}, "userErrors": []}
    assert again == {"changed": False, "task": {"version": 2}, "userErrors": []}


def test_lists_the_data_sizes_take_a_first(gql: GraphQL, operator: Caller, viewer: Caller) -> None:
    agent_id = _agent(gql, operator)
    task = _create_task(gql, operator)
    others = [_create_task(gql, operator) for _ in range(3)]
    add = """mutation($t: ID!, $d: ID!) { addTaskDependency(input: {taskId: $t, dependsOnId: $d}) {
               projected userErrors { code } } }"""
    for other in others:
        result = data(gql(add, {"t": task["id"], "d": other["id"]}, caller=operator))
        # Projected: `blockers` reads the edge from Neo4j.
        assert result["addTaskDependency"] == {"projected": True, "userErrors": []}
    award = """mutation($a: ID!, $t: String!) {
                 awardAchievement(input: {agentId: $a, type: $t, points: 1}) { userErrors { code } } }"""
    for kind in ("first", "second", "third"):
        result = data(gql(award, {"a": agent_id, "t": kind}, caller=operator))
        assert result["awardAchievement"]["userErrors"] == []
    query = """query($task: ID!, $agent: ID!) {
      task: node(id: $task) { ... on Task {
        dependencies(first: 2) { id } allDependencies: dependencies { id } noDependencies: dependencies(first: 0) { id }
        history(first: 2) { version type } allHistory: history { version }
        blockers(first: 2) { id } allBlockers: blockers { id }
      } }
      agent: node(id: $agent) { ... on Agent {
        achievements(first: 2) { type } allAchievements: achievements { type }
      } }
    }"""
    # A viewer, the least role that reads tasks and agents, reads these lists too.
    found = data(gql(query, {"task": task["id"], "agent": agent_id}, caller=viewer))
    task_lists, agent_lists = found["task"], found["agent"]
    # Oldest link first, oldest event first, newest achievement first.
    assert task_lists["dependencies"] == [{"id": other["id"]} for other in others[:2]]
    assert task_lists["allDependencies"] == [{"id": other["id"]} for other in others]
    assert task_lists["noDependencies"] == []
    assert task_lists["history"] == [
        {"version": 1, "type": "created"},
        {"version": 2, "type": "dependency_added"},
    ]
    assert [event["version"] for event in task_lists["allHistory"]] == [1, 2, 3, 4]
    # Unfinished tasks waited for, in id order.
    by_id = sorted((str(other["id"]) for other in others), key=lambda g: relay.from_base64(g)[1])
    assert task_lists["blockers"] == [{"id": global_id} for global_id in by_id[:2]]
    assert task_lists["allBlockers"] == [{"id": global_id} for global_id in by_id]
    assert agent_lists["achievements"] == [{"type": "third"}, {"type": "second"}]
    assert [a["type"] for a in agent_lists["allAchievements"]] == ["third", "second", "first"]
