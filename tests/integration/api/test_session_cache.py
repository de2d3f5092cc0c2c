"""Session checks are cached per process, and a revocation empties every replica's cache."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from uuid import UUID

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from resolvers.auth import Principal, Role
from resolvers.revocations import Revocation
from resolvers.session_cache import SessionCache
from stores import RedisStore
from stores.redis.sessions import SessionStore
from tests.integration.api.conftest import Caller, parse_round_trips
from tests.support.serving import wait_until

LOGIN = "mutation($k: String!) { login(input: {apiKey: $k}) { token session { id } } }"
WHO = {"query": "{ viewer { id } }"}


@pytest.fixture
def replicas(settings: Settings) -> Iterator[tuple[TestClient, TestClient]]:
    # A cache far longer than any test: only the pub/sub news can end a cached session.
    cached = settings.model_copy(update={"session_cache_s": 60.0})
    with TestClient(create_app(cached)) as first, TestClient(create_app(cached)) as second:
        yield first, second


def _login(client: TestClient, caller: Caller) -> tuple[dict[str, str], str]:
    body = client.post("/graphql", json={"query": LOGIN, "variables": {"k": caller.api_key}})
    login = body.json()["data"]["login"]
    return {"authorization": f"Bearer {login['token']}"}, login["session"]["id"]


def _trips(client: TestClient, headers: dict[str, str]) -> dict[str, int]:
    response = client.post("/graphql", json=WHO, headers=headers)
    assert response.status_code == 200, response.text
    # The stores actually called (the header names the others too, at zero).
    trips = parse_round_trips(response.headers["x-round-trips"])
    return {store: count for store, count in trips.items() if count}


def test_a_cached_session_costs_no_round_trip_to_check(
    replicas: tuple[TestClient, TestClient], viewer: Caller
) -> None:
    first, _ = replicas
    bearer, _ = _login(first, viewer)
    checked = _trips(first, bearer)
    # Checking it: the Redis script, and its standing in PostgreSQL (plus `viewer`'s read).
    assert checked["redis"] == 1 and checked["postgres"] == 2, checked
    assert _trips(first, bearer) == {"postgres": 1}


def test_logout_on_one_replica_ends_the_session_on_the_other(
    replicas: tuple[TestClient, TestClient], viewer: Caller, settings: Settings
) -> None:
    first, second = replicas
    bearer, session_id = _login(first, viewer)
    assert "redis" in _trips(second, bearer)
    assert "redis" not in _trips(second, bearer)

    # Ended behind the gateways' backs (no news): the second replica's cache still honours
    # it, which is what the news is for.
    async def end_quietly() -> None:
        async with RedisStore(settings.redis_options()) as redis:
            assert await SessionStore(redis).revoke(None, session_id) is True

    asyncio.run(end_quietly())
    assert _trips(second, bearer) == {"postgres": 1}

    bearer, _ = _login(first, viewer)
    assert _trips(second, bearer)["redis"] == 1
    assert first.post(
        "/graphql", json={"query": "mutation { logout { loggedOut } }"}, headers=bearer
    ).json()["data"]["logout"] == {"loggedOut": True}
    wait_until(
        lambda: second.post("/graphql", json=WHO, headers=bearer).status_code == 401,
        what="the logout to reach the second replica",
    )


def _principal(session_id: str, user: UUID, key: UUID, agent: UUID | None) -> Principal:
    return Principal(
        user_id=user,
        role=Role.VIEWER,
        agent_id=agent,
        session_id=session_id,
        api_key_id=key,
        scopes=frozenset(),
        via="session",
    )


def test_revocations_drop_what_they_cover() -> None:
    cache = SessionCache(60)
    user, key, other_key, agent = (UUID(int=n) for n in range(1, 5))
    later = datetime.now(UTC) + timedelta(hours=1)
    now = cache.generation
    cache.put("by-key", _principal("s1", user, key, None), expires_at=later, generation=now)
    cache.put("bound", _principal("s2", user, other_key, agent), expires_at=later, generation=now)

    cache.drop_covered(Revocation("key revoked", api_key_id=key))
    assert cache.get("by-key") is None and cache.get("bound") is not None
    cache.drop_covered(Revocation("grant revoked", user_id=user, agent_id=UUID(int=9)))
    assert cache.get("bound") is not None
    cache.drop_covered(Revocation("role changed", user_id=user))
    assert len(cache) == 0
    # Never past the session's own expiry.
    lapsed = datetime.now(UTC)
    cache.put(
        "lapsed", _principal("s3", user, key, None), expires_at=lapsed, generation=cache.generation
    )
    assert cache.get("lapsed") is None
    # A check that raced a revocation is not kept: it may be what the revocation ended.
    racing = cache.generation
    cache.drop_covered(Revocation("logged out", session_id="elsewhere"))
    cache.put("raced", _principal("s4", user, key, None), expires_at=later, generation=racing)
    assert cache.get("raced") is None
