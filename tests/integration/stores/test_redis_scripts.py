"""Lua scripts are registered with the store's client once, and run through it."""

from __future__ import annotations

from gateway.settings import Settings
from stores import RedisStore

_SOURCE = "return tonumber(ARGV[1]) + 1"


async def test_a_script_is_registered_once_and_runs(settings: Settings) -> None:
    async with RedisStore(settings.redis_options()) as store:
        first = store.script(_SOURCE)
        assert store.script(_SOURCE) is first
        assert await first(args=[41]) == 42
        assert await store.script(_SOURCE)(args=[1]) == 2
