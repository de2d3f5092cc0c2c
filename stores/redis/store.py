"""The Redis store: one connection pool, created and closed here (redis-py's lesson)."""

from __future__ import annotations

import time
from types import TracebackType

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stores._lifecycle import Lifecycle, StoreState
from stores.health import ProbeResult, ms_since
from stores.redis.options import RedisOptions

NAME = "redis"

# Errors that mean the server is not there or the connection broke; shared by the
# stores built on this connection (sessions, events).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
)


class RedisStore:
    __slots__ = ("_client", "_lifecycle", "_options", "_pool")

    def __init__(self, options: RedisOptions) -> None:
        self._options = options
        self._pool: aioredis.ConnectionPool | None = None
        self._client: aioredis.Redis | None = None
        self._lifecycle = Lifecycle(NAME)

    async def open(self) -> None:
        self._lifecycle.opening()
        self._pool = aioredis.ConnectionPool.from_url(
            self._options.url,
            max_connections=self._options.max_connections,
            socket_timeout=self._options.command_timeout,
            socket_connect_timeout=self._options.connect_timeout,
            health_check_interval=30,
            decode_responses=False,
            # A pooled connection left over from before a Redis restart fails its first
            # command; one immediate retry on a fresh connection hides that, while a Redis
            # that is really down still fails fast.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError],
        )
        self._client = aioredis.Redis(connection_pool=self._pool)
        self._lifecycle.state = StoreState.OPENED

    async def aclose(self) -> None:
        client, pool = self._client, self._pool
        self._client = self._pool = None
        self._lifecycle.state = StoreState.CLOSED
        if client is not None:
            await client.aclose()
        if pool is not None:
            await pool.aclose()

    async def __aenter__(self) -> RedisStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def client(self) -> aioredis.Redis:
        self._lifecycle.check_open()
        assert self._client is not None
        return self._client

    async def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            info = await self.client.info("server")
        except UNAVAILABLE_ERRORS as exc:
            return ProbeResult(NAME, False, ms_since(started), error=str(exc) or type(exc).__name__)
        return ProbeResult(NAME, True, ms_since(started), str(info.get("redis_version")))
