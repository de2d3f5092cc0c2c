"""Who may act as which agent: grants, checked at login and on every write made as an agent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from starlette.testclient import TestClient
from strawberry import relay

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique

LOGIN_AS = """mutation($k: String!, $a: ID!) { login(input: {apiKey: $k, agentId: $a}) {
  token session { agent { id } } userErrors { code } } }"""
GRANT = """mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) {
  created grant { id user { id } agent { id } grantedBy { id } } userErrors { field code } } }"""
REVOKE = """mutation($u: ID!, $a: ID!) { revokeAgentAccess(input: {userId: $u, agentId: $a}) {
  revoked userErrors { code } } }"""
START = "mutation($id: ID!) { startTask(input: {id: $id}) { task { status } userErrors { code } } }"
SET_STATUS = """mutation($id: ID!) { updateAgent(input: {id: $id, status: BUSY}) {
  agent { status } userErrors { code } } }"""
REMEMBER = """mutation($a: ID!, $v: [Float!]) { rememberMemory(input: {agentId: $a,
  content: "a note", vector: $v}) { memory { id } userErrors { code } } }"""
VECTOR = [0.1] * 384
RECORD = """mutation($p: [MetricPointInput!]!) { recordMetrics(input: {points: $p}) {
  accepted userErrors { field code } } }"""


def _user_id(caller: Caller) -> str:
    return str(relay.GlobalID("User", caller.user_id))


def _agent(gql: GraphQL, operator: Caller) -> str:
    created = data(
        gql(
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            {"n": unique("acted")},
            caller=operator,
        )
    )["createAgent"]
    agent_id: str = created["agent"]["id"]
    return agent_id


def _assigned_task(gql: GraphQL, operator: Caller, agent_id: str) -> str:
    created = data(
        gql(
            'mutation($a: ID!) { createTask(input: {title: "t", assigneeId: $a}) { task { id } } }',
            {"a": agent_id},
            caller=operator,
        )
    )["createTask"]
    task_id: str = created["task"]["id"]
    return task_id


def _grant(gql: GraphQL, operator: Caller, user: Caller, agent_id: str) -> dict[str, object]:
    granted: dict[str, object] = data(
        gql(GRANT, {"u": _user_id(user), "a": agent_id}, caller=operator)
    )["grantAgentAccess"]
    return granted


def _bearer(gql: GraphQL, user: Caller, agent_id: str) -> dict[str, str]:
    login = data(gql(LOGIN_AS, {"k": user.api_key, "a": agent_id}))["login"]
    assert login["userErrors"] == [] and login["session"]["agent"]["id"] == agent_id
    return {"authorization": f"Bearer {login['token']}"}


def test_login_binds_only_an_agent_the_user_may_act_as(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id = _agent(gql, operator)
    agent_user = make_caller("agent")
    # The attack: any agent-role key could bind a session to any agent.
    refused = gql(LOGIN_AS, {"k": agent_user.api_key, "a": agent_id})
    assert error_codes(refused) == ["FORBIDDEN"]
    assert "grantAgentAccess" in refused["errors"][0]["message"]

    granted = _grant(gql, operator, agent_user, agent_id)
    assert granted["created"] is True and granted["userErrors"] == []
    assert granted["grant"] == {
        "id": granted["grant"]["id"],  # type: ignore[index]
        "user": {"id": _user_id(agent_user)},
        "agent": {"id": agent_id},
        "grantedBy": {"id": _user_id(operator)},
    }
    assert _grant(gql, operator, agent_user, agent_id)["created"] is False
    _bearer(gql, agent_user, agent_id)
    # A grant on one agent binds that agent only.
    other = _agent(gql, operator)
    assert error_codes(gql(LOGIN_AS, {"k": agent_user.api_key, "a": other})) == ["FORBIDDEN"]


def test_a_bound_session_writes_as_its_agent_only_while_the_grant_holds(
    gql: GraphQL, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id, other_id = _agent(gql, operator), _agent(gql, operator)
    task_id = _assigned_task(gql, operator, agent_id)
    others_task = _assigned_task(gql, operator, other_id)
    agent_user = make_caller("agent")
    _grant(gql, operator, agent_user, agent_id)
    bearer = _bearer(gql, agent_user, agent_id)

    assert data(gql(SET_STATUS, {"id": agent_id}, headers=bearer))["updateAgent"]["agent"] == {
        "status": "BUSY"
    }
    assert error_codes(gql(SET_STATUS, {"id": other_id}, headers=bearer)) == ["FORBIDDEN"]
    assert error_codes(gql(START, {"id": others_task}, headers=bearer)) == ["FORBIDDEN"]
    assert data(gql(REMEMBER, {"a": agent_id, "v": VECTOR}, headers=bearer))["rememberMemory"][
        "memory"
    ]

    revoked = data(gql(REVOKE, {"u": _user_id(agent_user), "a": agent_id}, caller=operator))
    assert revoked["revokeAgentAccess"] == {"revoked": True, "userErrors": []}
    # The sessions bound to the agent end with the grant: the open one can do none of them.
    point = {"agentId": agent_id, "name": "energy", "value": 1.0}
    for mutation, variables in (
        (START, {"id": task_id}),
        (SET_STATUS, {"id": agent_id}),
        (REMEMBER, {"a": agent_id, "v": VECTOR}),
        (RECORD, {"p": [point]}),
    ):
        refused = gql(mutation, variables, headers=bearer)
        assert error_codes(refused) == ["UNAUTHENTICATED"], (mutation, refused)
    again = data(gql(REVOKE, {"u": _user_id(agent_user), "a": agent_id}, caller=operator))
    assert again["revokeAgentAccess"]["revoked"] is False


def test_grants_are_for_operators_to_manage_and_are_audited(
    gql: GraphQL, operator: Caller, viewer: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id = _agent(gql, operator)
    agent_user = make_caller("agent")
    variables = {"u": _user_id(agent_user), "a": agent_id}
    # The least privileged role that should not get through: agent (and viewer below it).
    for caller in (viewer, agent_user):
        assert error_codes(gql(GRANT, variables, caller=caller)) == ["FORBIDDEN"]
        assert error_codes(gql(REVOKE, variables, caller=caller)) == ["FORBIDDEN"]
    grant = _grant(gql, operator, agent_user, agent_id)["grant"]
    missing = data(gql(GRANT, {"u": _user_id(agent_user), "a": _user_id(viewer)}, caller=operator))[
        "grantAgentAccess"
    ]
    assert missing["userErrors"] == [{"field": "agentId", "code": "BAD_USER_INPUT"}]

    listing = """query($u: ID, $a: ID) { agentGrants(filter: {userId: $u, agentId: $a}) {
        totalCount edges { node { user { id } agent { id } } } } }"""
    by_agent = data(gql(listing, {"a": agent_id}, caller=operator))["agentGrants"]
    assert by_agent["totalCount"] == 1
    assert by_agent["edges"][0]["node"] == {
        "user": {"id": _user_id(agent_user)},
        "agent": {"id": agent_id},
    }
    own = data(gql(listing, {"u": _user_id(agent_user)}, caller=agent_user))["agentGrants"]
    assert [e["node"]["agent"]["id"] for e in own["edges"]] == [agent_id]
    assert error_codes(gql(listing, {"u": _user_id(agent_user)}, caller=viewer)) == ["FORBIDDEN"]
    assert error_codes(gql(listing, {"a": agent_id}, caller=agent_user)) == ["FORBIDDEN"]

    data(gql(REVOKE, variables, caller=operator))
    audit = data(
        gql(
            """query($id: String!) { auditLog(filter: {resourceType: "agent_grant", resourceId: $id}) {
                 edges { node { action actor } } } }""",
            {"id": grant["id"]},  # type: ignore[index]
            caller=operator,
        )
    )["auditLog"]["edges"]
    assert [e["node"] for e in audit] == [
        {"action": "agent_grant.revoke", "actor": _user_id(operator)},
        {"action": "agent_grant.create", "actor": _user_id(operator)},
    ]


def test_an_agent_key_without_a_bound_agent_records_no_metrics(
    gql: GraphQL, client: TestClient, operator: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id = _agent(gql, operator)
    name = unique("m").replace("-", "_")
    data(
        gql(
            "mutation($n: String!) { registerMetric(input: {name: $n}) { userErrors { code } } }",
            {"n": name},
            caller=operator,
        )
    )
    point = {"agentId": agent_id, "name": name, "value": 1.0, "time": datetime.now(UTC).isoformat()}
    unbound = make_caller("agent")
    # The attack: an agent-role key with no session bound to an agent recorded for any agent.
    refused = gql(RECORD, {"p": [point]}, caller=unbound)
    assert error_codes(refused) == ["FORBIDDEN"]
    line = f'{{"agentId": "{agent_id}", "name": "{name}", "value": 1}}\n'.encode()
    ingest = client.post("/ingest/metrics", content=line, headers=unbound.headers)
    assert ingest.status_code == 403

    # Bound to the agent, with its grant, the same user records for it (and only for it).
    _grant(gql, operator, unbound, agent_id)
    bearer = _bearer(gql, unbound, agent_id)
    assert data(gql(RECORD, {"p": [point]}, headers=bearer))["recordMetrics"]["accepted"] == 1
    elsewhere = {**point, "agentId": _agent(gql, operator)}
    assert error_codes(gql(RECORD, {"p": [elsewhere]}, headers=bearer)) == ["FORBIDDEN"]
