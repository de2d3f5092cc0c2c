"""Revocation reaches every sign-in: a revoked key's sessions end, and WebSocket
connections close when their session is logged out or revoked, or their key is
revoked, on whichever replica that happens."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import httpx2
import pytest
from starlette.applications import Starlette
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect
from websockets.typing import Subprotocol

from gateway.app import create_app
from gateway.settings import Settings
from resolvers.auth import Principal, Role
from resolvers.revocations import Revocation, Revocations
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes
from tests.support.serving import serve_in_thread, wait_until

LOGIN = """mutation($k: String!) { login(input: {apiKey: $k}) { token session { id } } }"""
MINT = """mutation { createApiKey(input: {name: "second"}) { secret apiKey { id } } }"""
REVOKE_KEY = "mutation($id: ID!) { revokeApiKey(input: {id: $id}) { revoked } }"


def test_revoking_a_key_ends_the_sessions_it_opened(gql: GraphQL, viewer: Caller) -> None:
    minted = data(gql(MINT, caller=viewer))["createApiKey"]
    login = data(gql(LOGIN, {"k": minted["secret"]}))["login"]
    session = login["session"]
    bearer = {"authorization": f"Bearer {login['token']}"}
    kept = data(gql(LOGIN, {"k": viewer.api_key}))["login"]
    kept_bearer = {"authorization": f"Bearer {kept['token']}"}
    listed = data(gql("{ mySessions { id } }", headers=kept_bearer))["mySessions"]
    assert {s["id"] for s in listed} >= {session["id"], kept["session"]["id"]}

    revoked = data(gql(REVOKE_KEY, {"id": minted["apiKey"]["id"]}, caller=viewer))
    assert revoked["revokeApiKey"] == {"revoked": True}
    # The attack: the session outlived its key for as long as it was used.
    refused = gql.client.post("/graphql", json={"query": "{ viewer { id } }"}, headers=bearer)
    assert refused.status_code == 401
    assert error_codes(refused.json()) == ["UNAUTHENTICATED"]
    listed = data(gql("{ mySessions { id } }", headers=kept_bearer))["mySessions"]
    assert session["id"] not in {s["id"] for s in listed}
    assert kept["session"]["id"] in {s["id"] for s in listed}


def test_a_session_reports_its_absolute_end(gql: GraphQL, viewer: Caller) -> None:
    login = """mutation($k: String!) { login(input: {apiKey: $k}) {
      session { createdAt expiresAt endsAt role } } }"""
    session = data(gql(login, {"k": viewer.api_key}))["login"]["session"]
    assert session["endsAt"] > session["expiresAt"] > session["createdAt"]
    assert session["role"] == "VIEWER"


def _post(base: str, query: str, variables: dict[str, Any], headers: dict[str, str]) -> Any:
    response = httpx2.post(
        f"{base}/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    return data(response.json())


@contextmanager
def _subscribed(base: str, payload: dict[str, str]) -> Iterator[ClientConnection]:
    url = base.replace("http", "ws") + "/graphql"
    with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": payload}))
        assert json.loads(ws.recv(timeout=30))["type"] == "connection_ack"
        query = "subscription { taskUpdated { change } }"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": query}}))
        yield ws


def _closed(ws: ClientConnection) -> Close:
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=60)
    assert closed.value.rcvd is not None, "the client, not the gateway, closed"
    return closed.value.rcvd


def _watching(app: Starlette) -> int:
    count: int = app.state.stores.revocations.watching
    return count


def test_logout_and_revocations_close_subscriptions_on_every_replica(
    settings: Settings, viewer: Caller, admin: Caller
) -> None:
    first, second = create_app(settings), create_app(settings)
    with serve_in_thread(first) as a, serve_in_thread(second) as b:
        # Logged out on B: the connection on A closes.
        token = _post(b, LOGIN, {"k": viewer.api_key}, {})["login"]["token"]
        bearer = {"authorization": f"Bearer {token}"}
        with _subscribed(a, bearer) as ws, _subscribed(a, bearer) as other:
            wait_until(lambda: _watching(first) == 2, what="A to watch the connections")
            _post(b, "mutation { logout { loggedOut } }", {}, bearer)
            for connection in (ws, other):
                close = _closed(connection)
                assert (close.code, close.reason) == (4403, "Signed out: logged out")

        # Its key revoked on B: a connection signed in with the key, and one with a
        # session the key opened, close on A.
        minted = _post(b, MINT, {}, viewer.headers)["createApiKey"]
        session_token = _post(b, LOGIN, {"k": minted["secret"]}, {})["login"]["token"]
        with (
            _subscribed(a, {"apiKey": minted["secret"]}) as by_key,
            _subscribed(a, {"authorization": f"Bearer {session_token}"}) as by_session,
        ):
            wait_until(lambda: _watching(first) == 2, what="A to watch both connections")
            _post(b, REVOKE_KEY, {"id": minted["apiKey"]["id"]}, viewer.headers)
            for ws in (by_key, by_session):
                assert _closed(ws).reason == "Signed out: API key revoked"

        # An admin revokes a session on A itself: the local path, same result.
        login = _post(a, LOGIN, {"k": viewer.api_key}, {})["login"]
        with (
            _subscribed(a, {"authorization": f"Bearer {login['token']}"}) as revoked,
            _subscribed(a, {"apiKey": viewer.api_key}) as untouched,
        ):
            wait_until(lambda: _watching(first) == 2, what="A to watch both connections")
            _post(
                a,
                "mutation($id: ID!) { revokeSession(input: {sessionId: $id}) { revoked } }",
                {"id": login["session"]["id"]},
                admin.headers,
            )
            assert _closed(revoked).reason == "Signed out: session revoked"
            # Only the revoked sign-in's connection ended.
            untouched.send(json.dumps({"type": "ping"}))
            assert json.loads(untouched.recv(timeout=30))["type"] == "pong"
        wait_until(lambda: _watching(first) == 0, what="closed connections to be forgotten")


def _signed_in(session_id: str) -> Principal:
    return Principal(
        user_id=UUID(int=1),
        role=Role.VIEWER,
        agent_id=None,
        session_id=session_id,
        api_key_id=None,
        scopes=frozenset(),
        via="session",
    )


async def test_a_connection_that_signed_in_during_a_revocation_ends_at_once() -> None:
    revocations = Revocations(None)
    since = revocations.generation  # read before the credential is checked
    await revocations.announce(Revocation("logged out", session_id="raced"))
    ended: list[str] = []
    revocations.watch(_signed_in("raced"), ended.append, since=since)
    assert ended == ["logged out"] and revocations.watching == 0
    unwatch = revocations.watch(_signed_in("other"), ended.append, since=since)
    assert ended == ["logged out"] and revocations.watching == 1
    unwatch()
    assert revocations.watching == 0
