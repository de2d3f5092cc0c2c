"""What every resolver receives: the open stores and the request they serve."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from stores import GraphStore, PostgresStore, RedisStore


@dataclass(frozen=True)
class Stores:
    """The stores the app lifespan opened; shared by all requests of one process."""

    postgres: PostgresStore
    graph: GraphStore
    redis: RedisStore
    probe_timeout: float = 2.0


@dataclass
class RequestContext:
    """Built once per operation (HTTP request or WebSocket subscription)."""

    stores: Stores
    connection: HTTPConnection
    request_id: str
