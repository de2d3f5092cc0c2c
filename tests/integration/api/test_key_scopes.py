"""A credential never mints an API key wider than itself (scope escalation)."""

from __future__ import annotations

from strawberry import relay

from tests.integration.api.conftest import Caller, GraphQL, data, error_codes

MINT = """mutation($scopes: [String!]!) { createApiKey(input: {scopes: $scopes}) {
  secret apiKey { scopes } userErrors { field code } } }"""
MINT_UNSCOPED = "mutation { createApiKey(input: {}) { secret userErrors { code } } }"
CREATE_USER = """mutation($e: String!) { createUser(input: {email: $e, role: ADMIN}) {
  user { id } userErrors { code } } }"""


def _key(gql: GraphQL, caller: Caller, scopes: list[str]) -> dict[str, str]:
    minted = data(gql(MINT, {"scopes": scopes}, caller=caller))["createApiKey"]
    assert minted["userErrors"] == [], minted
    return {"x-api-key": minted["secret"]}


def test_a_read_key_cannot_mint_an_unscoped_key(gql: GraphQL, admin: Caller) -> None:
    read_only = _key(gql, admin, ["read"])
    # The attack: an unscoped key carries the admin's full role and can create users.
    refused = gql(MINT_UNSCOPED, headers=read_only)
    assert error_codes(refused) == ["FORBIDDEN"]
    assert refused["data"] is None
    assert "read" in refused["errors"][0]["message"]
    assert error_codes(gql(CREATE_USER, {"e": "escalated@example.test"}, headers=read_only)) == [
        "FORBIDDEN"
    ]
    # Wider scopes are refused too; the same or narrower ones are fine.
    assert error_codes(gql(MINT, {"scopes": ["write"]}, headers=read_only)) == ["FORBIDDEN"]
    assert error_codes(gql(MINT, {"scopes": ["read", "admin"]}, headers=read_only)) == ["FORBIDDEN"]
    narrower = data(gql(MINT, {"scopes": ["read"]}, headers=read_only))["createApiKey"]
    assert narrower["apiKey"] == {"scopes": ["read"]}


def test_a_session_keeps_its_keys_cap_when_minting(gql: GraphQL, admin: Caller) -> None:
    write_key = _key(gql, admin, ["write"])
    login = data(
        gql(
            "mutation($k: String!) { login(input: {apiKey: $k}) { token } }",
            {"k": write_key["x-api-key"]},
        )
    )["login"]
    bearer = {"authorization": f"Bearer {login['token']}"}
    assert error_codes(gql(MINT_UNSCOPED, headers=bearer)) == ["FORBIDDEN"]
    assert error_codes(gql(MINT, {"scopes": ["admin"]}, headers=bearer)) == ["FORBIDDEN"]
    # `write` holds `agent` and `read` below it.
    minted = data(gql(MINT, {"scopes": ["agent"]}, headers=bearer))["createApiKey"]
    assert minted["apiKey"] == {"scopes": ["agent"]}


def test_an_unscoped_key_mints_within_its_users_role(gql: GraphQL, viewer: Caller) -> None:
    # Unscoped: a viewer's key holds `read`, so an unscoped or `read` key is within it, and
    # an `admin` scope on a viewer's key caps nothing above what the viewer has.
    assert data(gql(MINT_UNSCOPED, caller=viewer))["createApiKey"]["secret"]
    assert data(gql(MINT, {"scopes": ["admin"]}, caller=viewer))["createApiKey"]["secret"]


def test_only_an_unscoped_or_admin_credential_mints_for_someone_else(
    gql: GraphQL, admin: Caller, viewer: Caller
) -> None:
    for_viewer = """mutation($u: ID!) { createApiKey(input: {userId: $u}) {
        secret userErrors { code } } }"""
    target = {"u": str(relay.GlobalID("User", viewer.user_id))}
    assert error_codes(gql(for_viewer, target, headers=_key(gql, admin, ["write"]))) == [
        "FORBIDDEN"
    ]
    assert data(gql(for_viewer, target, caller=admin))["createApiKey"]["secret"]
