"""The Redis store: one client and its pools, created and closed here (redis-py's lesson).

The URL picks one server, a Sentinel-managed master or a Redis Cluster
(stores.redis.clients). Under a cluster, every Lua script and MULTI must keep the
keys of one call in one hash slot: give them a common hash tag (`{sessions}...`).
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import ClusterDownError, SlotNotCoveredError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stores._lifecycle import Lifecycle, StoreState
from stores._tls import describe_failure
from stores.health import PoolUsage, ProbeResult, ms_since
from stores.redis.clients import RedisClients, calls_in_flight, open_clients
from stores.redis.options import RedisOptions

NAME = "redis"

# Errors that mean the server is not there or the connection broke; shared by the
# stores built on this connection (sessions, events).
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    TimeoutError,
    # A cluster whose slot's master is gone, until a replica takes over.
    ClusterDownError,
    SlotNotCoveredError,
)


class RedisStore:
    __slots__ = ("_clients", "_lifecycle", "_options", "_scripts")

    def __init__(self, options: RedisOptions) -> None:
        self._options = options
        self._clients: RedisClients | None = None
        self._lifecycle = Lifecycle(NAME)
        # Lua scripts registered with the clients, by source (see `script`).
        self._scripts: dict[str, AsyncScript] = {}

    async def open(self) -> None:
        self._lifecycle.opening()
        self._clients = open_clients(
            self._options.target,
            max_connections=self._options.max_connections,
            command_timeout=self._options.command_timeout,
            connect_timeout=self._options.connect_timeout,
            tls=_tls_arguments(self._options),
        )
        self._lifecycle.state = StoreState.OPENED

    async def aclose(self) -> None:
        clients, self._clients = self._clients, None
        self._lifecycle.state = StoreState.CLOSED
        if clients is not None:
            await clients.aclose()

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
        """The client for commands. Under a cluster it is a `RedisCluster`, which has the
        same commands without being a subclass; it is typed as `Redis` so that callers
        need not care, and `cluster` gives it its own type where the two differ (pub/sub)."""
        self._lifecycle.check_open()
        assert self._clients is not None
        return cast(aioredis.Redis, self._clients.client)

    def script(self, source: str) -> AsyncScript:
        """The Lua script `source`, registered with the client once: registering hashes
        its text, and each call then sends the hash (EVALSHA, loading it if the server
        has not seen it)."""
        script = self._scripts.get(source)
        if script is None:
            script = self._scripts[source] = self.client.register_script(source)
        return script

    @property
    def cluster(self) -> RedisCluster | None:
        """The cluster client under a Redis Cluster URL, None otherwise."""
        self._lifecycle.check_open()
        assert self._clients is not None
        client = self._clients.client
        return client if isinstance(client, RedisCluster) else None

    @property
    def topology(self) -> str:
        """`server`, `sentinel` or `cluster`: what the URL names."""
        return self._options.target.topology

    def pool_usage(self) -> PoolUsage:
        """Commands under way against the pool's size, for metrics: those beyond it wait
        for a connection."""
        limit = self._options.max_connections
        under_way = calls_in_flight()
        return PoolUsage(
            in_use=min(under_way, limit), idle=0, waiting=max(0, under_way - limit), max=limit
        )

    async def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            if self.cluster is not None:
                # One node answers for the cluster: they run the same version.
                info = await self.cluster.info("server", target_nodes=RedisCluster.RANDOM)
            else:
                info = await self.client.info("server")
        except UNAVAILABLE_ERRORS as exc:
            return ProbeResult(NAME, False, ms_since(started), error=describe_failure(exc))
        details = {"topology": self.topology} if self.topology != "server" else {}
        return ProbeResult(NAME, True, ms_since(started), str(info.get("redis_version")), details)


def _tls_arguments(options: RedisOptions) -> dict[str, Any]:
    """redis-py's TLS arguments, for a `rediss` URL only (a plain connection takes none);
    under Sentinel and Cluster they apply to every connection that speaks TLS."""
    if not options.target.tls:
        return {}
    arguments: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if options.tls_ca_file:
        arguments["ssl_ca_certs"] = options.tls_ca_file
    if options.tls_cert_file:
        arguments["ssl_certfile"] = options.tls_cert_file
        arguments["ssl_keyfile"] = options.tls_key_file
    return arguments
