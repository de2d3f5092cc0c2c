"""Workflows, achievements, the audit log, users and API keys over HTTP."""

from __future__ import annotations

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

DEFINITION = {
    "steps": [
        {"id": "plan", "name": "Plan", "estimate": 2},
        {"id": "build", "name": "Build", "estimate": 5},
        {"id": "docs", "name": "Docs", "estimate": 1},
        {"id": "ship", "name": "Ship", "estimate": 1},
    ],
    "edges": [
        {"from": "plan", "to": "build"},
        {"from": "plan", "to": "docs"},
        {"from": "build", "to": "ship"},
        {"from": "docs", "to": "ship"},
    ],
}


def test_workflow_lifecycle_and_critical_path(gql: GraphQL, operator: Caller) -> None:
    created = data(
        gql(
            """mutation($name: String!, $d: JSON!) { createWorkflow(input: {name: $name, definition: $d}) {
                 workflow { id status version } projected userErrors { code field } } }""",
            {"name": unique("release"), "d": DEFINITION},
            caller=operator,
        )
    )["createWorkflow"]
    assert created["userErrors"] == [] and created["projected"] is True
    workflow = created["workflow"]
    assert workflow["status"] == "DRAFT"
    path = data(
        gql(
            """query($id: ID!) { criticalPath(workflowId: $id) { totalEstimate steps { id name } } }""",
            {"id": workflow["id"]},
            caller=operator,
        )
    )["criticalPath"]
    assert path["totalEstimate"] == 8
    assert [step["id"] for step in path["steps"]] == ["plan", "build", "ship"]
    updated = data(
        gql(
            """mutation($id: ID!) { updateWorkflow(input: {id: $id, expectedVersion: 1, status: ACTIVE}) {
                 workflow { status version } userErrors { code } } }""",
            {"id": workflow["id"]},
            caller=operator,
        )
    )["updateWorkflow"]
    assert updated["workflow"] == {"status": "ACTIVE", "version": 2}


def test_a_cyclic_workflow_is_refused_naming_the_field(gql: GraphQL, operator: Caller) -> None:
    cyclic = {
        "steps": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a"}],
    }
    refused = data(
        gql(
            """mutation($d: JSON!) { createWorkflow(input: {name: "loop", definition: $d}) {
                 workflow { id } userErrors { code field message } } }""",
            {"d": cyclic},
            caller=operator,
        )
    )["createWorkflow"]
    assert refused["workflow"] is None
    error = refused["userErrors"][0]
    assert (error["code"], error["field"]) == ("BAD_USER_INPUT", "definition")
    assert "cycle" in error["message"]


def test_achievements_feed_the_leaderboard(gql: GraphQL, operator: Caller) -> None:
    agent = data(
        gql(
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            {"n": unique("star")},
            caller=operator,
        )
    )["createAgent"]["agent"]
    for points in (500_000, 400_000):
        awarded = data(
            gql(
                """mutation($a: ID!, $p: Int!) { awardAchievement(input: {agentId: $a, type: "shipped", points: $p}) {
                     achievement { points agent { id } } userErrors { code } } }""",
                {"a": agent["id"], "p": points},
                caller=operator,
            )
        )["awardAchievement"]
        assert awarded["achievement"]["agent"] == {"id": agent["id"]}
    board = data(
        gql("{ leaderboard(first: 1) { rank points achievements agent { id } } }", caller=operator)
    )
    assert board["leaderboard"] == [
        {"rank": 1, "points": 900_000, "achievements": 2, "agent": {"id": agent["id"]}}
    ]


def test_audit_log_records_mutations_and_is_for_operators(
    gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    name = unique("audited")
    agent = data(
        gql(
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            {"n": name},
            caller=operator,
        )
    )["createAgent"]["agent"]
    query = """query($actor: ID!) { auditLog(filter: {actorId: $actor, resourceType: "agent"}, first: 5) {
                 totalCount edges { node { action resourceType newValue requestId clientAddress } } } }"""
    actor = str(_user_global_id(operator))
    entries = data(gql(query, {"actor": actor}, caller=operator))["auditLog"]
    assert entries["totalCount"] >= 1
    newest = entries["edges"][0]["node"]
    assert newest["resourceType"] == "agent"
    assert newest["newValue"]["name"] == name
    assert newest["requestId"]
    assert error_codes(gql(query, {"actor": actor}, caller=viewer)) == ["FORBIDDEN"]
    assert agent["id"]


def _user_global_id(caller: Caller) -> str:
    from strawberry import relay

    return str(relay.GlobalID("User", caller.user_id))


def test_admins_create_users_and_users_manage_their_keys(
    gql: GraphQL, admin: Caller, viewer: Caller
) -> None:
    email = f"{unique('new')}@example.test"
    made = data(
        gql(
            """mutation($e: String!) { createUser(input: {email: $e, role: OPERATOR}) {
                 user { id role email } userErrors { code field } } }""",
            {"e": email},
            caller=admin,
        )
    )["createUser"]
    assert made["user"]["role"] == "OPERATOR" and made["user"]["email"] == email
    duplicate = data(
        gql(
            """mutation($e: String!) { createUser(input: {email: $e, role: VIEWER}) {
                 user { id } userErrors { code field } } }""",
            {"e": email},
            caller=admin,
        )
    )["createUser"]
    assert duplicate["userErrors"] == [{"code": "CONFLICT", "field": "email"}]
    assert error_codes(
        gql(
            'mutation { createUser(input: {email: "x@example.test", role: ADMIN}) { user { id } } }',
            caller=viewer,
        )
    ) == ["FORBIDDEN"]

    key = data(
        gql(
            """mutation { createApiKey(input: {name: "laptop"}) { secret apiKey { id name prefix } userErrors { code } } }""",
            caller=viewer,
        )
    )["createApiKey"]
    assert key["secret"].startswith(f"pg_{key['apiKey']['prefix']}_")
    mine = data(
        gql("{ myApiKeys { id name } viewer { email } }", headers={"x-api-key": key["secret"]})
    )
    assert {"id": key["apiKey"]["id"], "name": "laptop"} in mine["myApiKeys"]
    revoked = data(
        gql(
            "mutation($id: ID!) { revokeApiKey(input: {id: $id}) { revoked } }",
            {"id": key["apiKey"]["id"]},
            caller=viewer,
        )
    )["revokeApiKey"]
    assert revoked == {"revoked": True}
    audit = data(
        gql(
            """query($actor: ID!) { auditLog(filter: {actorId: $actor, resourceType: "api_key"}) {
                 edges { node { action resourceId newValue } } } }""",
            {"actor": _user_global_id(viewer)},
            caller=admin,
        )
    )["auditLog"]["edges"]
    assert [e["node"]["action"] for e in audit] == ["api_key.revoke", "api_key.create"]
    assert all(key["secret"] not in str(e["node"]) for e in audit)
    response = gql.client.post(
        "/graphql", json={"query": "{ viewer { id } }"}, headers={"x-api-key": key["secret"]}
    )
    assert response.status_code == 401


def test_other_users_emails_are_hidden_from_non_admins(
    gql: GraphQL, admin: Caller, viewer: Caller
) -> None:
    query = "query($id: ID!) { node(id: $id) { ... on User { role email } } }"
    target = _user_global_id(admin)
    hidden = gql(query, {"id": target}, caller=viewer)
    assert error_codes(hidden) == ["FORBIDDEN"]
    shown = data(gql(query, {"id": _user_global_id(viewer)}, caller=admin))
    assert shown["node"]["email"].endswith("@example.test")


def test_unrelate_update_and_remove_dependency(gql: GraphQL, operator: Caller) -> None:
    a, b = (
        data(
            gql(
                "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
                {"n": unique("pair")},
                caller=operator,
            )
        )["createAgent"]["agent"]["id"]
        for _ in range(2)
    )
    link = "mutation($s: ID!, $t: ID!) { %s(input: {sourceId: $s, targetId: $t, type: DELEGATES_TO}) { removed userErrors { code } } }"
    data(gql(link % "relateAgents", {"s": a, "t": b}, caller=operator))
    assert data(gql(link % "unrelateAgents", {"s": a, "t": b}, caller=operator))[
        "unrelateAgents"
    ] == {
        "removed": True,
        "userErrors": [],
    }
    collaborators = data(
        gql(
            "query($id: ID!) { node(id: $id) { ... on Agent { collaborators { type } } } }",
            {"id": a},
            caller=operator,
        )
    )["node"]["collaborators"]
    assert collaborators == []

    task_ids = [
        data(
            gql(
                "mutation($t: String!) { createTask(input: {title: $t}) { task { id } } }",
                {"t": unique("t")},
                caller=operator,
            )
        )["createTask"]["task"]["id"]
        for _ in range(2)
    ]
    updated = data(
        gql(
            """mutation($id: ID!) { updateTask(input: {id: $id, priority: 9, description: "more"}) {
                 task { priority description version } userErrors { code field } } }""",
            {"id": task_ids[0]},
            caller=operator,
        )
    )["updateTask"]
    assert updated["task"] == {"priority": 9, "description": "more", "version": 2}
    bad = data(
        gql(
            """mutation($id: ID!) { updateTask(input: {id: $id, priority: 11}) { task { id } userErrors { code field } } }""",
            {"id": task_ids[0]},
            caller=operator,
        )
    )["updateTask"]
    assert bad["userErrors"] == [{"code": "BAD_USER_INPUT", "field": "priority"}]
    dependency = "mutation($t: ID!, $d: ID!) { %s(input: {taskId: $t, dependsOnId: $d}) { changed userErrors { code } } }"
    data(
        gql(dependency % "addTaskDependency", {"t": task_ids[0], "d": task_ids[1]}, caller=operator)
    )
    removed = data(
        gql(
            dependency % "removeTaskDependency",
            {"t": task_ids[0], "d": task_ids[1]},
            caller=operator,
        )
    )
    assert removed["removeTaskDependency"] == {"changed": True, "userErrors": []}
