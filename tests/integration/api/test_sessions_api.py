"""Signing in with an API key, using the session, and ending it."""

from __future__ import annotations

from collections.abc import Callable

from strawberry import relay

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes

LOGIN = """mutation($key: String!) { login(input: {apiKey: $key}) {
  token session { id role user { id } } userErrors { code } } }"""


def _login(gql: GraphQL, caller: Caller) -> tuple[str, str]:
    result = data(gql(LOGIN, {"key": caller.api_key}))["login"]
    assert result["userErrors"] == []
    return result["token"], result["session"]["id"]


def test_login_then_bearer_then_logout(gql: GraphQL, viewer: Caller, admin: Caller) -> None:
    token, session_id = _login(gql, viewer)
    bearer = {"authorization": f"Bearer {token}"}
    me = data(gql("{ viewer { id role } mySessions { id } }", headers=bearer))
    assert me["viewer"]["role"] == "VIEWER"
    assert session_id in [s["id"] for s in me["mySessions"]]
    assert data(gql("mutation { logout { loggedOut } }", headers=bearer))["logout"] == {
        "loggedOut": True
    }
    response = gql.client.post("/graphql", json={"query": "{ viewer { id } }"}, headers=bearer)
    assert response.status_code == 401
    audit = data(
        gql(
            """query($id: String!) { auditLog(filter: {resourceType: "session", resourceId: $id}) {
                 edges { node { action } } } }""",
            {"id": session_id},
            caller=admin,
        )
    )["auditLog"]["edges"]
    assert [e["node"]["action"] for e in audit] == ["session.logout", "session.login"]


def test_a_wrong_api_key_does_not_log_in(gql: GraphQL) -> None:
    body = gql(LOGIN, {"key": "pg_00000000_nope"})
    result = body["data"]["login"] if body.get("data") else None
    codes = error_codes(body) or [e["code"] for e in (result or {}).get("userErrors", [])]
    assert codes == ["UNAUTHENTICATED"]


def test_sessions_can_be_revoked_by_their_owner_only(
    gql: GraphQL, make_caller: Callable[[str], Caller]
) -> None:
    owner, stranger = make_caller("operator"), make_caller("operator")
    token, session_id = _login(gql, owner)
    revoke = "mutation($id: ID!) { revokeSession(input: {sessionId: $id}) { revoked userErrors { code } } }"
    refused = gql(revoke, {"id": session_id}, caller=stranger)
    assert error_codes(refused) == ["FORBIDDEN"] or not data(refused)["revokeSession"]["revoked"]
    assert data(gql(revoke, {"id": session_id}, caller=owner))["revokeSession"]["revoked"] is True
    response = gql.client.post(
        "/graphql",
        json={"query": "{ viewer { id } }"},
        headers={"authorization": f"Bearer {token}"},
    )
    assert response.status_code == 401


AGENT_LOGIN = (
    "mutation($k: String!, $a: ID!) {"
    " login(input: {apiKey: $k, agentId: $a}) { token userErrors { code } } }"
)


def test_agent_sessions_are_for_operators(
    gql: GraphQL, operator: Caller, viewer: Caller, make_caller: Callable[[str], Caller]
) -> None:
    agent_id = data(
        gql(
            "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            {"n": f"watched-{viewer.user_id}"},
            caller=operator,
        )
    )["createAgent"]["agent"]["id"]
    agent_user = make_caller("agent")
    grant = "mutation($u: ID!, $a: ID!) { grantAgentAccess(input: {userId: $u, agentId: $a}) { created } }"
    user_id = str(relay.GlobalID("User", agent_user.user_id))
    assert data(gql(grant, {"u": user_id, "a": agent_id}, caller=operator))["grantAgentAccess"]
    login = data(gql(AGENT_LOGIN, {"k": agent_user.api_key, "a": agent_id}))["login"]
    assert login["userErrors"] == []
    query = "query($id: ID!) { node(id: $id) { ... on Agent { sessions { role agent { id } } } } }"
    seen = data(gql(query, {"id": agent_id}, caller=operator))["node"]["sessions"]
    assert seen == [{"role": "AGENT", "agent": {"id": agent_id}}]
    hidden = gql(query, {"id": agent_id}, caller=viewer)
    assert error_codes(hidden) == ["FORBIDDEN"]
    assert hidden["data"]["node"]["sessions"] is None
    # The agent itself may see its own sessions.
    own = gql(query, {"id": agent_id}, headers={"authorization": f"Bearer {login['token']}"})
    assert data(own)["node"]["sessions"] == seen

    # A second login: `first` gives the oldest.
    again = data(gql(AGENT_LOGIN, {"k": agent_user.api_key, "a": agent_id}))["login"]
    assert again["userErrors"] == []
    pages = (
        "query($id: ID!) { node(id: $id) { ... on Agent {"
        " all: sessions(first: 100) { id createdAt } first: sessions(first: 1) { id } } } }"
    )
    found = data(gql(pages, {"id": agent_id}, caller=operator))["node"]
    assert len(found["all"]) == 2
    oldest = min(found["all"], key=lambda s: (s["createdAt"], s["id"]))
    assert found["first"] == [{"id": oldest["id"]}]


def test_a_read_scoped_key_cannot_write_even_for_an_admin(gql: GraphQL, admin: Caller) -> None:
    key = data(
        gql(
            'mutation { createApiKey(input: {name: "ro", scopes: ["read"]}) { secret userErrors { code } } }',
            caller=admin,
        )
    )["createApiKey"]["secret"]
    read_only = {"x-api-key": key}
    assert data(gql("{ viewer { role } }", headers=read_only))["viewer"]["role"] == "ADMIN"
    assert "errors" not in gql("{ agents(first: 1) { totalCount } }", headers=read_only)
    refused = gql(
        'mutation { createAgent(input: {name: "nope"}) { agent { id } } }', headers=read_only
    )
    assert error_codes(refused) == ["FORBIDDEN"]
    login = data(gql(LOGIN, {"key": key}))["login"]
    assert login["session"]["role"] == "VIEWER"
    bad = data(
        gql(
            'mutation { createApiKey(input: {scopes: ["everything"]}) { userErrors { field code } } }',
            caller=admin,
        )
    )["createApiKey"]
    assert bad["userErrors"] == [{"field": "scopes", "code": "BAD_USER_INPUT"}]


def test_ones_own_sessions_show_their_roles_from_the_credential_check(
    gql: GraphQL, make_caller: Callable[[str], Caller], admin: Caller
) -> None:
    owner = make_caller("operator")
    read_key = data(
        gql(
            'mutation { createApiKey(input: {name: "ro", scopes: ["read"]}) { secret } }',
            caller=owner,
        )
    )["createApiKey"]["secret"]
    _login(gql, owner)
    _login(gql, Caller(user_id=owner.user_id, role="operator", api_key=read_key))

    def listed(selection: str) -> list[dict[str, str]]:
        # By API key: its check reads PostgreSQL on every request, the same each time.
        sessions: list[dict[str, str]] = data(
            gql(f"{{ mySessions {{ {selection} }} }}", caller=owner)
        )["mySessions"]
        return sessions

    listed("id")
    without_roles = gql.last_round_trips["postgres"]
    assert sorted(s["role"] for s in listed("role")) == ["OPERATOR", "VIEWER"]
    # The user's role came with the credential: no user read for the roles.
    assert gql.last_round_trips["postgres"] == without_roles

    demote = {"u": str(relay.GlobalID("User", owner.user_id)), "r": "VIEWER"}
    changed = gql(
        "mutation($u: ID!, $r: UserRole!) { setUserRole(input: {userId: $u, role: $r})"
        " { userErrors { code } } }",
        demote,
        caller=admin,
    )
    assert data(changed)["setUserRole"]["userErrors"] == []
    assert [s["role"] for s in listed("role")] == ["VIEWER", "VIEWER"]
