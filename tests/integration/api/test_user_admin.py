"""Admins revoke anyone's key, disable users and change roles: at once, everywhere, audited."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from starlette.testclient import TestClient
from strawberry import relay
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, unique
from tests.support.serving import serve_in_thread, wait_until

REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(input: {id: $id}) { revoked } }"
KEYS = "query($id: ID!) { node(id: $id) { ... on User { apiKeys { id revokedAt } } } }"
DISABLE = """mutation($u: ID!) { disableUser(input: {userId: $u}) {
  user { disabledAt } userErrors { field code } } }"""
ENABLE = "mutation($u: ID!) { enableUser(input: {userId: $u}) { user { disabledAt } } }"
SET_ROLE = """mutation($u: ID!, $r: UserRole!) { setUserRole(input: {userId: $u, role: $r}) {
  user { role } userErrors { field code } } }"""
LOGIN = "mutation($k: String!) { login(input: {apiKey: $k}) { token } }"
WHO = "{ viewer { id role } }"
AUDIT = """query($id: String!) { auditLog(filter: {resourceType: "user", resourceId: $id}) {
  edges { node { action oldValue newValue actor } } } }"""


def _user(caller: Caller) -> str:
    return str(relay.GlobalID("User", caller.user_id))


def _below_admin(gql: GraphQL, admin: Caller) -> dict[str, str]:
    """An admin's key scoped to `write`: it acts as an operator."""
    minted = data(
        gql('mutation { createApiKey(input: {scopes: ["write"]}) { secret } }', caller=admin)
    )
    return {"x-api-key": minted["createApiKey"]["secret"]}


def _status(gql: GraphQL, headers: dict[str, str]) -> int:
    status: int = gql.client.post("/graphql", json={"query": WHO}, headers=headers).status_code
    return status


def test_admins_revoke_another_users_key(
    gql: GraphQL, admin: Caller, operator: Caller, viewer: Caller
) -> None:
    # The least privileged principal that must not get through: an operator (and an
    # admin's key scoped below admin); for them someone else's key reads as none.
    (key,) = data(gql(KEYS, {"id": _user(viewer)}, caller=viewer))["node"]["apiKeys"]
    assert error_codes(gql(KEYS, {"id": _user(viewer)}, caller=operator)) == ["FORBIDDEN"]
    for refused in (operator.headers, _below_admin(gql, admin)):
        assert data(gql(REVOKE_KEY, {"id": key["id"]}, headers=refused))["revokeApiKey"] == {
            "revoked": False
        }
    bearer = {
        "authorization": f"Bearer {data(gql(LOGIN, {'k': viewer.api_key}))['login']['token']}"
    }
    assert _status(gql, viewer.headers) == _status(gql, bearer) == 200

    revoked = data(gql(REVOKE_KEY, {"id": key["id"]}, caller=admin))["revokeApiKey"]
    assert revoked == {"revoked": True}
    assert _status(gql, viewer.headers) == _status(gql, bearer) == 401
    (listed,) = data(gql(KEYS, {"id": _user(viewer)}, caller=admin))["node"]["apiKeys"]
    assert listed["revokedAt"] is not None
    audit = data(
        gql(
            """query($id: String!) { auditLog(filter: {resourceType: "api_key", resourceId: $id}) {
                 edges { node { action actor } } } }""",
            {"id": key["id"]},
            caller=admin,
        )
    )["auditLog"]["edges"]
    assert audit[0]["node"] == {"action": "api_key.revoke", "actor": _user(admin)}


def test_a_disabled_user_is_signed_out_everywhere_at_once(
    settings: Settings, gql: GraphQL, admin: Caller, operator: Caller, viewer: Caller
) -> None:
    target = {"u": _user(viewer)}
    for refused in (operator.headers, _below_admin(gql, admin)):
        assert error_codes(gql(DISABLE, target, headers=refused)) == ["FORBIDDEN"]
    own = data(gql(DISABLE, {"u": _user(admin)}, caller=admin))["disableUser"]
    assert own["userErrors"] == [{"field": "userId", "code": "CONFLICT"}]

    app = create_app(settings)
    with serve_in_thread(app) as base:
        token = data(gql(LOGIN, {"k": viewer.api_key}))["login"]["token"]
        bearer = {"authorization": f"Bearer {token}"}
        url = base.replace("http", "ws") + "/graphql"
        with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
            ws.send(json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}}))
            assert json.loads(ws.recv(timeout=30))["type"] == "connection_ack"
            wait_until(lambda: app.state.stores.revocations.watching == 1, what="the watch")

            disabled = data(gql(DISABLE, target, caller=admin))["disableUser"]
            assert disabled["userErrors"] == [] and disabled["user"]["disabledAt"]
            assert _status(gql, viewer.headers) == _status(gql, bearer) == 401
            # Another replica (this one) closes the user's connection on the news.
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    ws.recv(timeout=60)
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.reason == "Signed out: user disabled"
    assert error_codes(gql(LOGIN, {"k": viewer.api_key})) == ["UNAUTHENTICATED"]

    assert data(gql(ENABLE, target, caller=admin))["enableUser"]["user"]["disabledAt"] is None
    assert _status(gql, viewer.headers) == 200
    assert _status(gql, bearer) == 401  # sessions do not come back
    actions = data(gql(AUDIT, {"id": viewer.user_id}, caller=admin))["auditLog"]["edges"]
    assert [e["node"]["action"] for e in actions[:2]] == ["user.enable", "user.disable"]
    assert actions[1]["node"]["actor"] == _user(admin)


@pytest.fixture
def replicas(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    # Long caches: only the news can make the second replica see the change.
    cached = settings.model_copy(update={"session_cache_s": 60.0})
    with TestClient(create_app(cached)) as first, TestClient(create_app(cached)) as second:
        yield first, second


def test_a_role_change_applies_to_live_sessions_on_every_replica(
    replicas: tuple[TestClient, TestClient],
    gql: GraphQL,
    admin: Caller,
    operator: Caller,
    make_caller: Callable[[str], Caller],
) -> None:
    first, second = replicas
    user = make_caller("viewer")
    promote = {"u": _user(user), "r": "OPERATOR"}
    for refused in (operator.headers, _below_admin(gql, admin)):
        assert error_codes(gql(SET_ROLE, promote, headers=refused)) == ["FORBIDDEN"]

    token = first.post("/graphql", json={"query": LOGIN, "variables": {"k": user.api_key}})
    bearer = {"authorization": f"Bearer {token.json()['data']['login']['token']}"}

    def role_on(replica: TestClient) -> str:
        body = replica.post("/graphql", json={"query": WHO}, headers=bearer).json()
        role: str = body["data"]["viewer"]["role"]
        return role

    assert role_on(first) == role_on(second) == "VIEWER"  # both replicas cache it now
    changed = first.post(
        "/graphql", json={"query": SET_ROLE, "variables": promote}, headers=admin.headers
    ).json()["data"]["setUserRole"]
    assert changed == {"user": {"role": "OPERATOR"}, "userErrors": []}
    assert role_on(first) == "OPERATOR"
    wait_until(lambda: role_on(second) == "OPERATOR", what="the second replica to see it")
    # The new role applies: an operator's write goes through on the same session.
    created = second.post(
        "/graphql",
        json={
            "query": "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }",
            "variables": {"n": unique("promoted")},
        },
        headers=bearer,
    )
    assert "errors" not in created.json(), created.json()
    (entry, *_) = data(gql(AUDIT, {"id": user.user_id}, caller=admin))["auditLog"]["edges"]
    assert entry["node"]["action"] == "user.role"
    assert (entry["node"]["oldValue"], entry["node"]["newValue"]) == (
        {"role": "viewer"},
        {"role": "operator"},
    )
