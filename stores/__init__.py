"""The four stores. They know nothing of GraphQL: plain records in, plain records out."""

from stores.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    StoreError,
    StoreMisuse,
    StoreOverloaded,
    StoreRefused,
    StoreTimeout,
    StoreUnavailable,
)
from stores.graph import GraphOptions, GraphStore
from stores.health import ProbeResult
from stores.postgres import PostgresOptions, PostgresStore
from stores.redis import RedisOptions, RedisStore

__all__ = [
    "Conflict",
    "GraphOptions",
    "GraphStore",
    "InvalidInput",
    "NotFound",
    "PostgresOptions",
    "PostgresStore",
    "ProbeResult",
    "RedisOptions",
    "RedisStore",
    "StoreError",
    "StoreMisuse",
    "StoreOverloaded",
    "StoreRefused",
    "StoreTimeout",
    "StoreUnavailable",
]
