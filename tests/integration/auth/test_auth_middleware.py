"""The authentication middleware in a tiny app, against real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from uuid import UUID

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from gateway.auth import AuthenticationMiddleware, principal_of
from gateway.settings import Settings
from resolvers.context import Stores
from stores import GraphStore, PostgresStore, RedisStore
from stores.postgres import UserRepository
from stores.redis.sessions import SessionStore
from tests.integration.auth.conftest import unique_email


async def whoami(request: Request) -> JSONResponse:
    principal = principal_of(request.scope)
    return JSONResponse(
        {
            "via": principal.via,
            "user_id": str(principal.user_id) if principal.user_id else None,
            "role": principal.role.value if principal.role else None,
            "scopes": sorted(principal.scopes),
        }
    )


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"principal": "principal" in request.scope.get("state", {})})


@pytest.fixture
def stores(
    settings: Settings,
    postgres: PostgresStore,
    redis: RedisStore,
    sessions: SessionStore,
    migrated: None,
) -> Stores:
    return Stores(postgres, GraphStore(settings.graph_options()), redis, sessions=sessions)


@pytest.fixture
async def client(stores: Stores) -> AsyncIterator[httpx2.AsyncClient]:
    app = Starlette(
        routes=[Route("/whoami", whoami), Route("/health", health), Route("/health/live", health)],
        middleware=[Middleware(AuthenticationMiddleware, stores=stores)],
    )
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


@pytest.fixture
async def operator_key(users: UserRepository) -> tuple[str, str]:
    user = await users.create_user(email=unique_email(), role="operator")
    _, key = await users.create_api_key(user.id, scopes=["write"])
    return str(user.id), key


async def test_no_credential_is_anonymous(client: httpx2.AsyncClient) -> None:
    response = await client.get("/whoami")
    assert response.status_code == 200
    assert response.json() == {"via": "anonymous", "user_id": None, "role": None, "scopes": []}


async def test_bearer_session(
    client: httpx2.AsyncClient, stores: Stores, operator_key: tuple[str, str]
) -> None:
    user_id, _ = operator_key
    assert stores.sessions is not None
    _, token = await stores.sessions.create(
        user_id=UUID(user_id), role="operator", agent_id=None, ttl_s=60
    )
    response = await client.get("/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.json() == {
        "via": "session",
        "user_id": user_id,
        "role": "operator",
        "scopes": [],
    }


@pytest.mark.parametrize(
    ("header", "template"),
    [
        ("Authorization", "ApiKey {key}"),
        ("Authorization", "apikey   {key}"),
        ("X-Api-Key", "{key}"),
    ],
    ids=["authorization", "scheme-case-and-spaces", "x-api-key"],
)
async def test_api_key(
    client: httpx2.AsyncClient, operator_key: tuple[str, str], header: str, template: str
) -> None:
    user_id, key = operator_key
    response = await client.get("/whoami", headers={header: template.format(key=key)})
    assert response.json() == {
        "via": "api_key",
        "user_id": user_id,
        "role": "operator",
        "scopes": ["write"],
    }


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer not-a-session"},
        {"Authorization": "ApiKey pg_abcdefgh_" + "x" * 43},
        {"X-Api-Key": "nonsense"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer something", "X-Api-Key": "something else"},
    ],
    ids=["bad-session", "bad-key", "bad-x-api-key", "basic", "empty", "both"],
)
async def test_invalid_credential_is_401(
    client: httpx2.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.get("/whoami", headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    # GraphQL-shaped, in the media type the client accepts, like any GraphQL refusal.
    assert response.headers["content-type"] == "application/graphql-response+json"
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "UNAUTHENTICATED"}
    assert error["message"]


async def test_health_is_not_authenticated(client: httpx2.AsyncClient) -> None:
    for path in ("/health", "/health/live"):
        response = await client.get(path, headers={"Authorization": "Bearer not-a-session"})
        assert response.status_code == 200
        assert response.json() == {"principal": False}


async def test_websockets_and_lifespan_pass_through(stores: Stores) -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    async def receive() -> Message:
        return {"type": "websocket.connect"}

    async def send(message: Message) -> None:
        raise AssertionError("the middleware answered a scope it should pass on")

    middleware = AuthenticationMiddleware(app, stores=stores)
    bad = [(b"authorization", b"Bearer not-a-session")]
    await middleware({"type": "websocket", "path": "/graphql", "headers": bad}, receive, send)
    await middleware({"type": "lifespan"}, receive, send)
    assert [scope["type"] for scope in seen] == ["websocket", "lifespan"]
    assert "state" not in seen[0]
