"""Sessions keep working from memory while Redis is down, and go back to it after.

Uses a private Redis, so stopping it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid

import pytest

from infra.local.redis_server import RedisServer
from resolvers.context import Stores
from resolvers.health import HealthTier, check_health
from stores import GraphStore, PostgresStore, ProbeResult, RedisStore
from stores.redis.sessions import SESSION_KEY, SessionOptions, SessionStore


def _key(token: str) -> str:
    return SESSION_KEY + hashlib.sha256(token.encode()).hexdigest()


def _redis_component(components: tuple[ProbeResult, ...]) -> ProbeResult:
    return next(probe for probe in components if probe.store == "redis")


async def test_sessions_fall_back_to_memory_and_return_to_redis(
    private_redis: RedisServer,
    private_redis_store: RedisStore,
    postgres: PostgresStore,
    graph: GraphStore,
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis = private_redis_store
    sessions = SessionStore(redis, SessionOptions(touch_interval=0, fallback_retry=0.2))
    stores = Stores(postgres, graph, redis, sessions=sessions)
    user_id, agent_id = uuid.uuid4(), uuid.uuid4()

    async def new_session(agent: uuid.UUID | None = None) -> tuple[str, str]:
        session, token = await sessions.create(
            user_id=user_id, role="agent", agent_id=agent, ttl_s=600
        )
        return session.id, token

    before_id, before = await new_session()
    _, leaving = await new_session()
    _, unseen = await new_session()
    # Resolved once, so this process can vouch for them during an outage.
    assert await sessions.resolve(before) is not None
    assert await sessions.resolve(leaving) is not None
    assert not sessions.fallback_active

    private_redis.stop()
    with caplog.at_level(logging.WARNING, logger="stores.redis.sessions"):
        during_id, during = await new_session(agent_id)
        assert sessions.fallback_active
        resolved = await sessions.resolve(during)
        assert resolved is not None and resolved.id == during_id
        assert await sessions.resolve(before) is not None
        assert await sessions.delete(leaving) is True
        # Never seen by this process: cannot be vouched for, but the logout is kept.
        assert await sessions.resolve(unseen) is None
        assert await sessions.delete(unseen) is False
        assert {s.id for s in await sessions.list_for_user(user_id)} == {before_id, during_id}
        assert [s.id for s in (await sessions.for_agents([agent_id]))[agent_id]] == [during_id]
        # Past the retry interval Redis is tried again, and is still down.
        await asyncio.sleep(0.3)
        assert await sessions.resolve(during) is not None
    outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
    assert len(outages) == 1
    assert sessions.fallback_operations == 9

    report = await check_health(stores)
    component = _redis_component(report.components)
    assert report.status is HealthTier.MODERATE
    assert not component.up
    assert component.details["sessions_fallback"].startswith("active; 9 operations")

    private_redis.start()
    report = await check_health(stores)
    assert report.status is HealthTier.HEALTHY
    assert "sessions_fallback" not in _redis_component(report.components).details
    assert not sessions.fallback_active

    # What happened meanwhile is in Redis now, for every gateway to see.
    assert await redis.client.exists(_key(during)) == 1
    assert await redis.client.exists(_key(before)) == 1
    assert await redis.client.exists(_key(leaving)) == 0
    assert await redis.client.exists(_key(unseen)) == 0
    assert [s.id for s in await sessions.list_for_user(user_id)] == [before_id, during_id]
    assert [s.id for s in (await sessions.for_agents([agent_id]))[agent_id]] == [during_id]

    _, after = await new_session()
    assert await redis.client.exists(_key(after)) == 1
    assert await sessions.resolve(during) is not None
    assert await sessions.resolve(leaving) is None
    assert sessions.fallback_operations == 9


async def test_fallback_starts_when_redis_is_down_from_the_start(
    private_redis: RedisServer, private_redis_store: RedisStore
) -> None:
    private_redis.stop()
    sessions = SessionStore(private_redis_store, SessionOptions(fallback_retry=60))
    session, token = await sessions.create(
        user_id=uuid.uuid4(), role="viewer", agent_id=None, ttl_s=60
    )
    assert sessions.fallback_active
    assert await sessions.resolve(token) == session
    assert await sessions.delete(token) is True
    assert await sessions.resolve(token) is None

    private_redis.start()
    # The retry interval has not passed: still memory, unless asked to try now.
    await sessions.create(user_id=uuid.uuid4(), role="viewer", agent_id=None, ttl_s=60)
    assert sessions.fallback_active
    assert await sessions.recover() is True
    assert not sessions.fallback_active
