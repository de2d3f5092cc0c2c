"""The redis-py client a URL asks for: one server, a Sentinel-managed master, or a Cluster.

    redis://[[user]:password@]host:port/db           one server (also rediss://, unix://)
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]
                                                      the master Sentinel names `service`
    redis+cluster://[[user]:password@]host:port[,host:port...]
                                                      a Redis Cluster, from any of its nodes

redis-py has `Sentinel` and `RedisCluster` but no URL for either, so the two `+`
schemes are this project's. Credentials in the URL are the data nodes'; sentinels
that want their own take `?sentinel_password=...` (and `sentinel_username`).

`rediss+sentinel://` and `rediss+cluster://` speak TLS, as `rediss://` does, with
the same CA and client certificate settings: to every cluster node, and to the
master and the sentinels (`?sentinel_tls=false` for sentinels on a plain port).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException
from redis.exceptions import TimeoutError as RedisTimeoutError

from stores import roundtrips

T = TypeVar("T")

Topology = Literal["server", "sentinel", "cluster"]

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
# The same over TLS.
TLS_SCHEMES = {
    "rediss": "redis",
    "rediss+sentinel": SENTINEL_SCHEME,
    "rediss+cluster": CLUSTER_SCHEME,
}
_DEFAULT_PORTS = {SENTINEL_SCHEME: 26379, CLUSTER_SCHEME: 6379}


@dataclass(frozen=True, kw_only=True)
class RedisTarget:
    """What a Redis URL names. Only `server` URLs are handed to redis-py as they are."""

    topology: Topology
    url: str = field(repr=False)
    # TLS to the data nodes (a `rediss` scheme), and to the sentinels.
    tls: bool = False
    sentinel_tls: bool = False
    nodes: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)


def parse_redis_url(url: str) -> RedisTarget:
    """Raises `ValueError` naming what is wrong with `url`."""
    given = url.split("://", 1)[0].lower() if "://" in url else ""
    tls = given in TLS_SCHEMES
    scheme = TLS_SCHEMES.get(given, given)
    if scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        if scheme not in ("redis", "unix"):
            raise ValueError(
                "a Redis URL starts with redis://, rediss://, unix://,"
                f" {SENTINEL_SCHEME}://, {CLUSTER_SCHEME}:// (rediss+... for TLS)"
            )
        return RedisTarget(topology="server", url=url, tls=tls)
    parts = urlsplit(url)
    # urlsplit cannot read a host list: split the network location by hand.
    userinfo, _, hosts = parts.netloc.rpartition("@")
    username, _, password = userinfo.partition(":")
    nodes = tuple(_node(item, _DEFAULT_PORTS[scheme]) for item in hosts.split(",") if item)
    if not nodes:
        raise ValueError(f"a {scheme}:// URL names at least one host:port")
    path = [unquote(segment) for segment in parts.path.split("/") if segment]
    query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
    common: dict[str, Any] = {
        "url": url,
        "tls": tls,
        "nodes": nodes,
        "username": unquote(username) or None,
        "password": unquote(password) or None,
    }
    if scheme == CLUSTER_SCHEME:
        if path not in ([], ["0"]):
            raise ValueError("a Redis Cluster has database 0 only: leave the path empty")
        return RedisTarget(topology="cluster", **common)
    if not 1 <= len(path) <= 2:
        raise ValueError(
            f"a {SENTINEL_SCHEME}:// URL ends with /<service name>[/<db>],"
            f" e.g. {SENTINEL_SCHEME}://127.0.0.1:26379/mymaster/0"
        )
    return RedisTarget(
        topology="sentinel",
        service=path[0],
        db=_db(path[1]) if len(path) == 2 else 0,
        sentinel_username=query.get("sentinel_username"),
        sentinel_password=query.get("sentinel_password"),
        sentinel_tls=tls and _flag(query.get("sentinel_tls", "true"), "sentinel_tls"),
        **common,
    )


def _node(item: str, default_port: int) -> tuple[str, int]:
    host, _, port = item.strip().rpartition(":")
    if not host:
        return item.strip(), default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{item!r} is not host:port")
    return host.strip("[]"), int(port)


def _flag(text: str, name: str) -> bool:
    if text.lower() not in ("true", "false"):
        raise ValueError(f"{name} is true or false, not {text!r}")
    return text.lower() == "true"


def _db(text: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the database must be a number, not {text!r}")
    return int(text)


# Commands and pipelines under way in this process: each holds a pooled connection.
_in_flight = 0


def calls_in_flight() -> int:
    return _in_flight


async def _timed(call: Awaitable[T]) -> T:
    global _in_flight
    started = time.perf_counter()
    _in_flight += 1
    try:
        return await call
    finally:
        _in_flight -= 1
        roundtrips.timed("redis", time.perf_counter() - started)


class _TimedRedis(aioredis.Redis):
    """Times each command and pipeline for the store latency histogram (each call is
    counted by the code that makes it, in `stores.roundtrips`)."""

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        return await _timed(super().execute_command(*args, **options))  # type: ignore[no-untyped-call]

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _TimedPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint
        )


class _TimedPipeline(Pipeline):
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return await _timed(super().execute(raise_on_error))


class _TimedClusterPipeline(ClusterPipeline):
    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        client = self.cluster_client
        assert isinstance(client, _Cluster)
        execute = super().execute
        return await _timed(client.in_turn(lambda: execute(raise_on_error, allow_redirections)))


# Set while a task holds one of a cluster client's call slots: a pipeline that falls
# back to single commands (redis-py does, after a redirection) already has its slot.
_holding_slot: ContextVar[bool] = ContextVar("holding_redis_slot", default=False)


class _Cluster(RedisCluster):
    """Reports a cluster that no seed node answers as a connection error, as a single
    server that is down would be, rather than as a generic cluster exception.

    redis-py's cluster client refuses a command ("Too many connections") when its
    node's connections are all busy; here commands and pipelines wait their turn, up
    to `wait_s`, as a single server's pool makes them wait. A call holds at most one
    connection of each node; one of each node's is left for sharded pub/sub."""

    def __init__(self, *, max_connections: int, wait_s: float, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        self._slots = asyncio.Semaphore(max(1, max_connections - 1))
        self._wait_s = wait_s

    async def in_turn(self, call: Callable[[], Awaitable[T]]) -> T:
        if _holding_slot.get():
            return await call()
        if self._slots.locked():
            # A timer only for a call that has to wait.
            try:
                async with asyncio.timeout(self._wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await self._slots.acquire()
        held = _holding_slot.set(True)
        try:
            return await call()
        finally:
            _holding_slot.reset(held)
            self._slots.release()

    async def initialize(
        self,
        additional_startup_nodes_info: list[tuple[str, int]] | None = None,
        last_failed_node_name: str | None = None,
    ) -> RedisCluster:
        try:
            return await super().initialize(additional_startup_nodes_info, last_failed_node_name)
        except RedisClusterException as exc:
            cause = exc.__cause__
            if isinstance(cause, RedisConnectionError | RedisTimeoutError | OSError):
                raise RedisConnectionError(str(exc)) from exc
            raise

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        execute = super().execute_command
        return await _timed(self.in_turn(lambda: execute(*args, **kwargs)))

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused, as redis-py does
        return _TimedClusterPipeline(self, transaction)  # type: ignore[abstract]


@dataclass
class RedisClients:
    """The client commands go through, and whatever else must be closed with it."""

    client: aioredis.Redis | RedisCluster
    # A pool handed to the client is not the client's to close.
    pool: aioredis.ConnectionPool | None = None
    sentinel: Sentinel | None = None

    async def aclose(self) -> None:
        await self.client.aclose()
        if self.pool is not None:
            await self.pool.aclose()
        if self.sentinel is not None:
            for sentinel in self.sentinel.sentinels:
                await sentinel.aclose()


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """The master's pool, waiting for a connection when all are busy, as a single
    server's pool does."""


def open_clients(
    target: RedisTarget,
    *,
    max_connections: int,
    command_timeout: float,
    connect_timeout: float,
    tls: dict[str, Any] | None = None,
) -> RedisClients:
    """Build the clients; none of them connects before its first command, so a Redis
    that is down at start-up does not stop the gateway. `tls` is redis-py's `ssl_*`
    arguments, for every TLS connection the target asks for (`target.tls`,
    `target.sentinel_tls`)."""
    tls = tls or {}
    connection: dict[str, Any] = {
        "socket_timeout": command_timeout,
        "socket_connect_timeout": connect_timeout,
        "decode_responses": False,
        # A pooled connection left over from before a restart or a failover fails its
        # first command; one immediate retry on a fresh connection hides that, while a
        # Redis that is really down still fails fast.
        "retry": Retry(NoBackoff(), 1),
        "retry_on_error": [RedisConnectionError],
    }
    if target.topology == "server":
        pool = aioredis.BlockingConnectionPool.from_url(
            target.url,
            max_connections=max_connections,
            # A command that finds every connection busy waits for one as long as a
            # command may take: a burst (a hundred WebSockets signing in at once) is
            # not an outage and must not be served as one (sessions from memory).
            timeout=command_timeout,
            health_check_interval=30,
            **connection,
            **(tls if target.tls else {}),
        )
        return RedisClients(_TimedRedis(connection_pool=pool), pool=pool)
    secured: dict[str, Any] = {"ssl": True, **tls} if target.tls else {}
    credentials: dict[str, Any] = {"username": target.username, "password": target.password}
    if target.topology == "cluster":
        # Redirections (MOVED, ASK) are followed by the client itself; these retries
        # cover a node that dropped its connection, with a short pause for a failover.
        connection["retry"] = Retry(EqualJitterBackoff(cap=0.5, base=0.05), 3)
        cluster = _Cluster(
            startup_nodes=[ClusterNode(host, port) for host, port in target.nodes],
            max_connections=max_connections,
            wait_s=command_timeout,
            **credentials,
            **connection,
            **secured,
        )
        return RedisClients(cluster)
    assert target.service is not None
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.nodes),
        sentinel_kwargs={
            "socket_timeout": command_timeout,
            "socket_connect_timeout": connect_timeout,
            "username": target.sentinel_username,
            "password": target.sentinel_password,
            **({"ssl": True, **tls} if target.sentinel_tls else {}),
        },
    )
    master = sentinel.master_for(
        target.service,
        redis_class=_TimedRedis,
        connection_pool_class=_BlockingSentinelPool,
        timeout=command_timeout,
        db=target.db,
        max_connections=max_connections,
        health_check_interval=30,
        **credentials,
        **connection,
        # `ssl` picks redis-py's SentinelManagedSSLConnection for the master's pool.
        **secured,
    )
    return RedisClients(master, sentinel=sentinel)
