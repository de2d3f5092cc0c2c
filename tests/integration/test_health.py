"""Health reads live versions and degrades, not fails, when Redis goes away."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from infra.local.profiles import Profile
from infra.local.redis_server import RedisServer
from stores import PostgresStore
from tests.support.serving import wait_until


@pytest.fixture
def signed_in(client: TestClient, settings: Settings) -> dict[str, str]:
    """An API key's headers: the breakdown per store is for signed-in callers."""

    async def key() -> str:
        async with PostgresStore(settings.postgres_options()) as postgres:
            user = await postgres.users.create_user(
                email=f"health-{secrets.token_hex(6)}@example.test", role="viewer"
            )
            _, secret = await postgres.users.create_api_key(user.id)
        return secret

    return {"x-api-key": asyncio.run(key())}


def test_health_reports_live_versions_of_every_store(
    client: TestClient, signed_in: dict[str, str]
) -> None:
    body = client.get("/health", headers=signed_in).json()
    assert body["status"] == "healthy"
    components = body["components"]
    assert components["postgres"]["version"].startswith("18")
    assert components["postgres"]["details"]["pgvector"].startswith("0.8")
    assert components["neo4j"]["version"].startswith("5.26")
    assert components["redis"]["version"].startswith("7.")
    assert all(c["latencyMs"] >= 0 for c in components.values())


def test_checked_at_is_rfc_3339_like_the_rest_of_the_api(client: TestClient) -> None:
    checked_at = client.get("/health").json()["checkedAt"]
    assert isinstance(checked_at, str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", checked_at)
    assert abs(datetime.fromisoformat(checked_at) - datetime.now(UTC)) < timedelta(minutes=5)
    graphql = client.post("/graphql", json={"query": "{ health { checkedAt } }"}).json()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00", graphql["data"]["health"]["checkedAt"]
    )


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "live"}
    assert client.get("/health/ready").json() == {"status": "ready"}


def test_graphql_health_field_matches(client: TestClient, signed_in: dict[str, str]) -> None:
    query = "{ health { status components { name up version pgvectorVersion edition } } }"
    health = client.post("/graphql", json={"query": query}, headers=signed_in).json()["data"][
        "health"
    ]
    assert health["status"] == "HEALTHY"
    by_name = {c["name"]: c for c in health["components"]}
    assert by_name["postgres"]["pgvectorVersion"]
    assert by_name["neo4j"]["edition"] == "community"


@pytest.fixture
def private_redis(profile: Profile) -> Iterator[RedisServer]:
    """A Redis of this test's own, so stopping it disturbs no other test."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int("".join(ch for ch in worker if ch.isdigit()) or 0)
    own = replace(
        profile,
        name=f"{profile.name}-{worker}-redis",
        redis_port=profile.redis_port + 100 + index,
        var_dir=profile.var_dir / f"private-redis-{worker}",
    )
    server = RedisServer(own)
    server.start()
    yield server
    server.stop()


def test_redis_down_is_moderate_and_queries_still_answer(
    settings: Settings, private_redis: RedisServer, signed_in: dict[str, str]
) -> None:
    own_settings = settings.model_copy(
        update={"redis_url": SecretStr(f"redis://127.0.0.1:{private_redis.port}/0")}
    )
    with TestClient(create_app(own_settings)) as client:

        def status() -> str:
            tier: str = client.get("/health").json()["status"]
            return tier

        assert status() == "healthy"

        private_redis.stop()
        # One probe serves every reader for a second: the next one sees Redis gone.
        wait_until(lambda: status() == "moderate", what="health to see Redis down")
        body = client.get("/health", headers=signed_in).json()
        assert body["components"]["redis"]["status"] == "down"
        answer = client.post("/graphql", json={"query": "{ health { status } }"})
        assert answer.status_code == 200
        assert answer.json()["data"]["health"]["status"] == "MODERATE"

        private_redis.start()
        wait_until(lambda: status() == "healthy", what="health to see Redis back")
