"""HTTP statuses say what happened: client errors 4xx, server-side conditions 503 with
`Retry-After` (an outage, a store too slow, every connection busy), never 400 for
something the client cannot fix."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import httpx2
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from stores import RedisStore
from stores.redis.sessions import SessionOptions, SessionStore
from tests.integration.api.conftest import Caller
from tests.support.waiting import until

AGENTS = "{ agents(first: 1) { edges { node { id } } } }"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[httpx2.AsyncClient]:
    """A gateway in this test's event loop, so the test can hold locks beside it."""
    quiet = settings.model_copy(
        update={
            "migrate_on_start": False,
            "projector_enabled": False,
            "embedding_filler_enabled": False,
        }
    )
    app = create_app(quiet)
    transport = httpx2.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx2.AsyncClient(transport=transport, base_url="http://gateway") as client,
    ):
        yield client


@asynccontextmanager
async def agents_locked(settings: Settings) -> AsyncIterator[asyncpg.Connection]:
    """Every statement that reads `agents` waits while this is held."""
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        async with conn.transaction():
            await conn.execute("LOCK TABLE agents IN ACCESS EXCLUSIVE MODE")
            yield conn
    finally:
        await conn.close()


async def _waiting_on_the_lock(conn: asyncpg.Connection) -> bool:
    waiting = await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    return bool(waiting)


def _only_error(response: httpx2.Response) -> dict[str, Any]:
    body = response.json()
    assert body.get("data") is None
    (error,) = body["errors"]
    result: dict[str, Any] = error
    return result


async def test_postgres_down_answers_503_to_a_session_client_without_driver_text(
    settings: Settings, redis: RedisStore, operator: Caller
) -> None:
    # A session lives in Redis, but checking it needs PostgreSQL (its user's standing).
    sessions = SessionStore(redis, SessionOptions())
    _, token = await sessions.create(
        user_id=UUID(operator.user_id), role="operator", agent_id=None, ttl_s=60
    )
    port = _closed_port()
    no_postgres = settings.model_copy(
        update={
            "postgres_dsn": SecretStr(f"postgresql://polygraph:polygraph@127.0.0.1:{port}/none"),
            "postgres_acquire_timeout_s": 1.0,
        }
    )
    async with serving(no_postgres) as client:
        response = await client.post(
            "/graphql", json={"query": AGENTS}, headers={"authorization": f"Bearer {token}"}
        )
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    error = _only_error(response)
    assert error["extensions"]["code"] == "STORE_UNAVAILABLE"
    assert error["extensions"]["store"] == "postgres"
    assert str(port) not in response.text
    assert "127.0.0.1" not in response.text


async def test_api_key_client_with_postgres_down_gets_the_same_answer(
    settings: Settings, operator: Caller
) -> None:
    port = _closed_port()
    no_postgres = settings.model_copy(
        update={
            "postgres_dsn": SecretStr(f"postgresql://polygraph:polygraph@127.0.0.1:{port}/none"),
            "postgres_acquire_timeout_s": 1.0,
        }
    )
    async with serving(no_postgres) as client:
        response = await client.post("/graphql", json={"query": AGENTS}, headers=operator.headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert _only_error(response)["extensions"] == {"code": "STORE_UNAVAILABLE", "store": "postgres"}
    assert str(port) not in response.text


async def test_a_statement_past_its_timeout_is_store_timeout_503(
    settings: Settings, operator: Caller
) -> None:
    impatient = settings.model_copy(update={"postgres_statement_timeout_s": 0.5})
    async with serving(impatient) as client, agents_locked(settings):
        response = await client.post("/graphql", json={"query": AGENTS}, headers=operator.headers)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    error = _only_error(response)
    assert error["extensions"]["code"] == "STORE_TIMEOUT"
    assert "TimeoutError" not in error["message"]


async def test_every_connection_busy_is_overloaded_503(
    settings: Settings, operator: Caller
) -> None:
    one_connection = settings.model_copy(
        update={
            "postgres_pool_min": 1,
            "postgres_pool_max": 1,
            "postgres_acquire_timeout_s": 0.5,
            "postgres_statement_timeout_s": 60,
        }
    )
    async with serving(one_connection) as client:
        async with agents_locked(settings) as lock_holder:
            # The first request takes the only connection and waits on the lock...
            first = asyncio.create_task(
                client.post("/graphql", json={"query": AGENTS}, headers=operator.headers)
            )
            await until(lambda: _waiting_on_the_lock(lock_holder))
            # ... so the second finds no connection to sign in with.
            second = await client.post("/graphql", json={"query": AGENTS}, headers=operator.headers)
        assert (await first).status_code == 200
    assert second.status_code == 503
    assert second.headers["retry-after"] == "1"
    assert _only_error(second)["extensions"]["code"] == "OVERLOADED"


def test_no_credential_and_a_wrong_credential_get_the_same_401(client: TestClient) -> None:
    anonymous = client.post("/graphql", json={"query": AGENTS})
    wrong = client.post("/graphql", json={"query": AGENTS}, headers={"x-api-key": "nonsense"})
    for response in (anonymous, wrong):
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/graphql-response+json"
        assert response.headers["x-round-trips"]
        assert _only_error(response)["extensions"]["code"] == "UNAUTHENTICATED"


def test_forbidden_without_data_is_403_and_partial_data_is_200(
    client: TestClient, viewer: Caller
) -> None:
    forbidden = client.post(
        "/graphql", json={"query": "{ auditLog { totalCount } }"}, headers=viewer.headers
    )
    assert forbidden.status_code == 403
    assert _only_error(forbidden)["extensions"]["code"] == "FORBIDDEN"

    partial = client.post(
        "/graphql",
        json={"query": '{ viewer { id } node(id: "not-an-id") { id } }'},
        headers=viewer.headers,
    )
    assert partial.status_code == 200
    body = partial.json()
    assert body["data"]["viewer"]["id"]
    assert body["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
