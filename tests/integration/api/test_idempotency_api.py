"""Every mutation takes an idempotency key, and a retry with it replays the first answer.

Each test sends a mutation twice with one key (a client retrying after a lost
response) and then once with a new key, which shows what a second write would
have answered instead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from strawberry import relay

from schema import build_schema
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

# `login` is anonymous and answers a new session token, which is never stored to be
# replayed; a retried `logout` carries a token that has already ended. A retried
# `reportPresence` is one more heartbeat, which changes nothing (and keeping a key per
# heartbeat in PostgreSQL would defeat keeping presence out of it).
WITHOUT_KEY = {"login", "logout", "reportPresence"}


def test_every_mutation_takes_an_idempotency_key() -> None:
    schema = build_schema([])._schema
    mutation = schema.mutation_type
    assert mutation is not None
    missing = []
    for name, field in mutation.fields.items():
        argument = field.args.get("input")
        fields = getattr(argument.type.of_type, "fields", {}) if argument else {}
        if "idempotencyKey" not in fields:
            missing.append(name)
    assert sorted(missing) == sorted(WITHOUT_KEY)


class Retry:
    """Sends `mutation(input: ...)` with an idempotency key, selecting `selection`."""

    def __init__(
        self, gql: GraphQL, caller: Caller, mutation: str, input_type: str, selection: str
    ) -> None:
        self.gql, self.caller, self.mutation = gql, caller, mutation
        self.document = (
            f"mutation($input: {input_type}!) {{ {mutation}(input: $input) {{ {selection} }} }}"
        )

    def send(self, key: str, **input: Any) -> dict[str, Any]:
        body = self.gql(
            self.document, {"input": {**input, "idempotencyKey": key}}, caller=self.caller
        )
        payload: dict[str, Any] = data(body)[self.mutation]
        return payload

    def twice_then_fresh(
        self, **input: Any
    ) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        key = unique("key")
        return self.send(key, **input), self.send(key, **input), self.send(unique("key"), **input)


def _create(gql: GraphQL, caller: Caller, mutation: str, input: dict[str, Any], node: str) -> str:
    body = gql(
        f"mutation($input: {mutation[0].upper()}{mutation[1:]}Input!) {{ {mutation}(input: $input)"
        f" {{ {node} {{ id }} userErrors {{ code message }} }} }}",
        {"input": input},
        caller=caller,
    )
    payload = data(body)[mutation]
    assert payload["userErrors"] == [], payload["userErrors"]
    found: str = payload[node]["id"]
    return found


def _agent(gql: GraphQL, caller: Caller) -> str:
    return _create(gql, caller, "createAgent", {"name": unique("agent")}, "agent")


def _task(gql: GraphQL, caller: Caller) -> str:
    return _create(gql, caller, "createTask", {"title": unique("task")}, "task")


def _knowledge(gql: GraphQL, caller: Caller) -> str:
    vector = [1.0] + [0.0] * 383
    return _create(
        gql, caller, "createKnowledge", {"title": unique("item"), "vector": vector}, "knowledge"
    )


def test_a_retried_dependency_removal_replays_changed(gql: GraphQL, operator: Caller) -> None:
    task, depends_on = _task(gql, operator), _task(gql, operator)
    edge = {"taskId": task, "dependsOnId": depends_on}
    add = Retry(gql, operator, "addTaskDependency", "TaskDependencyInput", "changed")
    assert add.send(unique("key"), **edge) == {"changed": True}
    remove = Retry(
        gql, operator, "removeTaskDependency", "TaskDependencyInput", "changed userErrors { code }"
    )
    first, again, fresh = remove.twice_then_fresh(**edge)
    assert first == again == {"changed": True, "userErrors": []}
    assert fresh == {"changed": False, "userErrors": []}


def test_a_retried_unrelate_replays_removed(gql: GraphQL, operator: Caller) -> None:
    source, target = _agent(gql, operator), _agent(gql, operator)
    link = {"sourceId": source, "targetId": target, "type": "DELEGATES_TO"}
    Retry(gql, operator, "relateAgents", "RelateAgentsInput", "removed").send(unique("k"), **link)
    unrelate = Retry(gql, operator, "unrelateAgents", "UnrelateAgentsInput", "removed")
    first, again, fresh = unrelate.twice_then_fresh(**link)
    assert first == again == {"removed": True}
    assert fresh == {"removed": False}

    items = _knowledge(gql, operator), _knowledge(gql, operator)
    link = {"sourceId": items[0], "targetId": items[1], "type": "SUPPORTS"}
    relate = Retry(gql, operator, "relateKnowledge", "RelateKnowledgeInput", "target { id }")
    assert relate.send(unique("k"), **link) == {"target": {"id": items[1]}}
    unrelate = Retry(gql, operator, "unrelateKnowledge", "UnrelateKnowledgeInput", "removed")
    first, again, fresh = unrelate.twice_then_fresh(**link)
    assert first == again == {"removed": True}
    assert fresh == {"removed": False}


def test_a_key_reused_for_another_link_is_refused(gql: GraphQL, operator: Caller) -> None:
    source, first_target, other_target = (_knowledge(gql, operator) for _ in range(3))
    relate = Retry(
        gql,
        operator,
        "relateKnowledge",
        "RelateKnowledgeInput",
        "target { id } userErrors { code field }",
    )
    key = unique("key")
    linked = relate.send(key, sourceId=source, targetId=first_target, type="RELATES_TO")
    assert linked == {"target": {"id": first_target}, "userErrors": []}
    reused = relate.send(key, sourceId=source, targetId=other_target, type="RELATES_TO")
    assert reused == {
        "target": None,
        "userErrors": [{"code": "CONFLICT", "field": "idempotencyKey"}],
    }
    links = data(
        gql(
            "query($id: ID!) { node(id: $id) { ... on Knowledge { related { item { id } } } } }",
            {"id": source},
            caller=operator,
        )
    )["node"]["related"]
    assert links == [{"item": {"id": first_target}}]


def test_retried_updates_replay_instead_of_conflicting(gql: GraphQL, operator: Caller) -> None:
    cases: list[tuple[str, str, str, str, dict[str, Any]]] = [
        ("updateAgent", "UpdateAgentInput", "agent", _agent(gql, operator), {"notes": "n"}),
        ("updateTask", "UpdateTaskInput", "task", _task(gql, operator), {"priority": 9}),
        ("updateKnowledge", "UpdateKnowledgeInput", "knowledge", _knowledge(gql, operator),
         {"source": "wiki"}),
    ]  # fmt: skip
    flow = _create(
        gql,
        operator,
        "createWorkflow",
        {"name": unique("flow"), "definition": {"steps": [{"id": "a", "name": "A"}]}},
        "workflow",
    )
    cases.append(("updateWorkflow", "UpdateWorkflowInput", "workflow", flow, {"name": "renamed"}))
    for mutation, input_type, node, node_id, change in cases:
        update = Retry(
            gql, operator, mutation, input_type, f"{node} {{ id version }} userErrors {{ code }}"
        )
        first, again, fresh = update.twice_then_fresh(id=node_id, expectedVersion=1, **change)
        assert first == again == {node: {"id": node_id, "version": 2}, "userErrors": []}, mutation
        assert fresh == {node: None, "userErrors": [{"code": "CONFLICT"}]}, mutation


def test_retried_deletes_replay_what_was_deleted(
    gql: GraphQL, admin: Caller, operator: Caller
) -> None:
    agent = _agent(gql, operator)
    item = _knowledge(gql, operator)
    memory = _create(
        gql, operator, "rememberMemory", {"agentId": agent, "content": "seen"}, "memory"
    )
    # The memory first: deleting its agent deletes it too.
    cases = [
        ("forgetMemory", "ForgetMemoryInput", "memory", memory, operator),
        ("deleteAgent", "DeleteAgentInput", "agent", agent, admin),
        ("deleteKnowledge", "DeleteKnowledgeInput", "knowledge", item, operator),
    ]
    for mutation, input_type, node, node_id, caller in cases:
        delete = Retry(gql, caller, mutation, input_type, f"{node} {{ id }} userErrors {{ code }}")
        first, again, fresh = delete.twice_then_fresh(id=node_id)
        assert first == again == {node: {"id": node_id}, "userErrors": []}, mutation
        assert fresh == {node: None, "userErrors": [{"code": "NOT_FOUND"}]}, mutation


def test_retried_user_and_key_writes_replay(gql: GraphQL, admin: Caller) -> None:
    email = f"{unique('user')}@example.test"
    create_user = Retry(
        gql, admin, "createUser", "CreateUserInput", "user { id } userErrors { code field }"
    )
    first, again, fresh = create_user.twice_then_fresh(email=email, role="VIEWER")
    assert first == again and first["user"] is not None
    assert fresh == {"user": None, "userErrors": [{"code": "CONFLICT", "field": "email"}]}

    create_key = Retry(gql, admin, "createApiKey", "CreateApiKeyInput", "apiKey { id } secret")
    first, again, fresh = create_key.twice_then_fresh(name="ci")
    assert first["apiKey"] == again["apiKey"] != fresh["apiKey"]
    # The secret is never kept, so the replay cannot show it again.
    assert first["secret"] and fresh["secret"] and again["secret"] is None

    revoke = Retry(gql, admin, "revokeApiKey", "RevokeApiKeyInput", "revoked")
    key_id = first["apiKey"]["id"]
    first, again, fresh = revoke.twice_then_fresh(id=key_id)
    assert first == again == {"revoked": True}
    assert fresh == {"revoked": False}


def test_a_retried_session_revocation_replays_revoked(gql: GraphQL, operator: Caller) -> None:
    login = data(
        gql(
            "mutation($k: String!) { login(input: {apiKey: $k}) { session { id } } }",
            {"k": operator.api_key},
        )
    )["login"]
    revoke = Retry(gql, operator, "revokeSession", "RevokeSessionInput", "revoked")
    first, again, fresh = revoke.twice_then_fresh(sessionId=login["session"]["id"])
    assert first == again == {"revoked": True}
    assert fresh == {"revoked": False}


def test_retried_metric_writes_replay(gql: GraphQL, operator: Caller) -> None:
    name = unique("m").replace("-", "_")
    register = Retry(
        gql, operator, "registerMetric", "RegisterMetricInput", "metric { name updatedAt }"
    )
    first, again, fresh = register.twice_then_fresh(name=name, unit="ms")
    assert first == again
    # A new key writes again: the name's update time moves.
    updated = [datetime.fromisoformat(p["metric"]["updatedAt"]) for p in (first, fresh)]
    assert updated[1] > updated[0]

    agent = _agent(gql, operator)
    record = Retry(
        gql,
        operator,
        "recordMetrics",
        "RecordMetricsInput",
        "accepted duplicates userErrors { code }",
    )
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).replace(microsecond=0)
    point = {"agentId": agent, "name": name, "value": 1.5, "time": an_hour_ago.isoformat()}
    first, again, fresh = record.twice_then_fresh(points=[point])
    assert first == again == {"accepted": 1, "duplicates": 0, "userErrors": []}
    assert fresh == {"accepted": 0, "duplicates": 1, "userErrors": []}


def test_an_agent_retrying_its_own_forget_gets_the_replay(
    gql: GraphQL, operator: Caller, viewer: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent = _agent(gql, operator)
    agent_user = make_caller("agent")
    grant = "mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) { created } }"
    user_id = str(relay.GlobalID("User", agent_user.user_id))
    data(gql(grant, {"u": user_id, "a": agent}, caller=operator))
    token = data(
        gql(
            "mutation($k: String!, $a: ID!) { login(input: {apiKey: $k, agentId: $a}) { token } }",
            {"k": agent_user.api_key, "a": agent},
        )
    )["login"]["token"]
    as_agent = {"authorization": f"Bearer {token}"}
    memory = _create(gql, operator, "rememberMemory", {"agentId": agent, "content": "x"}, "memory")
    forget = """mutation($input: ForgetMemoryInput!) { forgetMemory(input: $input) {
                  memory { id } userErrors { code } } }"""
    key = unique("key")
    first, again = (
        data(gql(forget, {"input": {"id": memory, "idempotencyKey": key}}, headers=as_agent))
        for _ in range(2)
    )
    assert first == again == {"forgetMemory": {"memory": {"id": memory}, "userErrors": []}}
    # Viewers may forget nothing, gone or not.
    refused = gql(forget, {"input": {"id": memory, "idempotencyKey": key}}, caller=viewer)
    assert error_codes(refused) == ["FORBIDDEN"]
