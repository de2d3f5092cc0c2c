"""An entity cache whose Redis a test can take away and bring back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

from pydantic import SecretStr

from gateway.settings import Settings
from stores import PostgresStore, RedisStore
from stores.cache import CacheOptions, EntityCache
from tests.support.gate import Gate


@asynccontextmanager
async def redis_behind_gate(settings: Settings) -> AsyncIterator[tuple[RedisStore, Gate]]:
    """The test Redis reached through a gate: closed, Redis is unreachable and keeps
    its data."""
    url = urlsplit(settings.redis_url.get_secret_value())
    assert url.hostname is not None and url.port is not None
    async with Gate(url.hostname, url.port) as gate:
        relayed = url._replace(netloc=f"127.0.0.1:{gate.port}").geturl()
        through = settings.model_copy(update={"redis_url": SecretStr(relayed)})
        async with RedisStore(through.redis_options()) as redis:
            yield redis, gate


@asynccontextmanager
async def cache_behind_gate(
    settings: Settings,
) -> AsyncIterator[tuple[EntityCache, PostgresStore, Gate]]:
    """An entity cache following changes, on a migrated database, its Redis reached
    through a gate (`redis_behind_gate`)."""
    async with (
        redis_behind_gate(settings) as (redis, gate),
        PostgresStore(settings.postgres_options()) as postgres,
    ):
        await postgres.migrate()
        cache = EntityCache(postgres, redis, CacheOptions())
        await cache.start()
        try:
            yield cache, postgres, gate
        finally:
            await cache.aclose()
