"""A TCP relay to a real server that a test can cut and restore: a network partition
between the gateway and a store, the store itself left running with its data."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from urllib.parse import urlsplit

from pydantic import SecretStr

from gateway.settings import Settings
from stores import PostgresStore, RedisStore
from stores.cache import CacheOptions, EntityCache

_CHUNK = 64 * 1024


class TcpProxy:
    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._relays: set[asyncio.Task[None]] = set()
        self.cut_off = False

    @property
    def port(self) -> int:
        assert self._server is not None, "start the proxy first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        self._drop_connections()
        for relay in list(self._relays):
            relay.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()

    def cut(self) -> None:
        """Every relayed connection ends; new ones are closed as they arrive."""
        self.cut_off = True
        self._drop_connections()

    def restore(self) -> None:
        self.cut_off = False

    def _drop_connections(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, upstream_writer))
        relays = [
            asyncio.create_task(self._pump(reader, upstream_writer)),
            asyncio.create_task(self._pump(upstream_reader, writer)),
        ]
        self._relays.update(relays)
        try:
            await asyncio.gather(*relays, return_exceptions=True)
        finally:
            self._relays.difference_update(relays)
            for end in (writer, upstream_writer):
                self._writers.discard(end)
                end.transport.abort()

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while chunk := await source.read(_CHUNK):
                sink.write(chunk)
                await sink.drain()
        # One side ended: end the other, as a partition or a closed peer would.
        sink.transport.abort()


@asynccontextmanager
async def cache_through_proxy(
    settings: Settings,
) -> AsyncIterator[tuple[EntityCache, PostgresStore, TcpProxy]]:
    """An entity cache following changes, on a migrated database, its Redis reached
    through a proxy the test can cut."""
    url = urlsplit(settings.redis_url.get_secret_value())
    assert url.hostname is not None and url.port is not None
    async with TcpProxy(url.hostname, url.port) as proxy:
        relayed = url._replace(netloc=f"127.0.0.1:{proxy.port}").geturl()
        through = settings.model_copy(update={"redis_url": SecretStr(relayed)})
        async with (
            PostgresStore(settings.postgres_options()) as postgres,
            RedisStore(through.redis_options()) as redis,
        ):
            await postgres.migrate()
            cache = EntityCache(postgres, redis, CacheOptions())
            await cache.start()
            try:
                yield cache, postgres, proxy
            finally:
                await cache.aclose()
