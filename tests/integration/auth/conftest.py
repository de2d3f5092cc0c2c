"""Fixtures for users, API keys, sessions and events: real PostgreSQL and Redis."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from infra.local.profiles import Profile
from infra.local.redis_server import RedisServer
from stores import PostgresStore, RedisOptions, RedisStore
from stores.postgres import UserRepository
from stores.redis.sessions import SessionOptions, SessionStore
from tests.support.redis_servers import own_redis_server


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> None:
    async with PostgresStore(settings.postgres_options()) as store:
        await store.migrate()


@pytest.fixture
def users(postgres: PostgresStore, migrated: None) -> UserRepository:
    return postgres.users


@pytest.fixture
def session_options() -> SessionOptions:
    return SessionOptions(touch_interval=0.2, fallback_retry=0.2)


@pytest.fixture
def sessions(redis: RedisStore, session_options: SessionOptions) -> SessionStore:
    return SessionStore(redis, session_options)


def unique_email() -> str:
    return f"user-{secrets.token_hex(6)}@example.test"


@pytest.fixture
def private_redis(profile: Profile, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own on a free port, so stopping it disturbs no one else."""
    with own_redis_server(profile, tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def private_redis_store(private_redis: RedisServer) -> AsyncIterator[RedisStore]:
    # Short timeouts: these tests take Redis away on purpose.
    options = RedisOptions(
        url=f"redis://127.0.0.1:{private_redis.port}/0",
        command_timeout=0.5,
        connect_timeout=0.5,
    )
    async with RedisStore(options) as store:
        yield store
