"""Fixtures for users, API keys, sessions and events: real PostgreSQL and Redis."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.settings import Settings
from infra.local.profiles import Profile
from infra.local.redis_server import RedisServer
from stores import PostgresStore, RedisOptions, RedisStore
from stores.postgres import UserRepository
from stores.redis.sessions import SessionOptions, SessionStore


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def private_redis(profile: Profile, tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of this test's own on a free port, so stopping it disturbs no one else."""
    own = Profile(
        name=f"{profile.name}-private-redis",
        postgres_port=profile.postgres_port,
        redis_port=_free_port(),
        bolt_port=profile.bolt_port,
        var_dir=tmp_path / "redis",
    )
    server = RedisServer(own)
    server.start()
    yield server
    server.stop()


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
