"""Redis's connection pool under a burst: more commands at once than it has
connections wait their turn instead of failing as if Redis were down."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace

from gateway.settings import Settings
from stores import RedisStore
from tests.support.waiting import until


async def test_more_commands_at_once_than_the_pool_holds_wait_for_a_connection(
    settings: Settings,
) -> None:
    options = replace(settings.redis_options(), max_connections=2)
    key = f"test:pool:{secrets.token_hex(6)}"
    async with RedisStore(options) as store:
        try:
            counts = await asyncio.gather(*(store.client.incr(key) for _ in range(40)))
            assert sorted(counts) == list(range(1, 41))
        finally:
            await store.client.delete(key)


async def test_the_pool_reports_commands_beyond_its_size_as_waiting(settings: Settings) -> None:
    # Long enough a command timeout that the blocked command outlasts a loaded machine.
    options = replace(settings.redis_options(), max_connections=1, command_timeout=60.0)
    key = f"test:pool:{secrets.token_hex(6)}"
    async with RedisStore(options) as store:
        # The first command holds the only connection until an element arrives.
        blocked = asyncio.ensure_future(store.client.blpop([key], timeout=0))
        queued = [asyncio.ensure_future(store.client.ping()) for _ in range(3)]
        try:
            # At least: the count is the process's, and it may have other commands under way.
            await until(lambda: store.pool_usage().waiting >= 3)
            assert store.pool_usage().in_use == 1
        finally:
            async with RedisStore(settings.redis_options()) as other:
                await other.client.rpush(key, "go")
            assert await blocked == (key.encode(), b"go")
            assert await asyncio.gather(*queued) == [True, True, True]
