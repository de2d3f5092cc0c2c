"""Automatic persisted queries: documents by their SHA-256, cached in Redis for a while.

    apq:<sha256 hex>   the document's text; expires `ttl` seconds after its last registration

Bounded twice over: every entry expires, and none is larger than `max_bytes`.
Entries are content-addressed (callers verify the hash before `put`), so any copy
of one is as good as another.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from stores import roundtrips
from stores.errors import InvalidInput, StoreRefused, StoreUnavailable
from stores.redis.store import RedisStore

KEY_PREFIX = "apq:"

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    OutOfMemoryError,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True, kw_only=True)
class ApqOptions:
    ttl_s: int = 86_400
    max_bytes: int = 65_536

    def __post_init__(self) -> None:
        if self.ttl_s < 1:
            raise ValueError("ttl_s must be at least 1")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")


class PersistedQueryCache:
    """Documents by SHA-256 in Redis; an unreachable Redis raises `StoreUnavailable`."""

    __slots__ = ("_options", "_redis")

    def __init__(self, redis: RedisStore, options: ApqOptions) -> None:
        self._redis = redis
        self._options = options

    @property
    def max_bytes(self) -> int:
        return self._options.max_bytes

    async def get(self, sha256: str) -> str | None:
        roundtrips.record("redis")
        try:
            raw = await self._redis.client.get(KEY_PREFIX + sha256)
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
        except RedisError as exc:
            raise StoreRefused(f"redis refused a persisted query read: {exc}") from exc
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def put(self, sha256: str, document: str) -> None:
        """Keep `document` (whose SHA-256 the caller checked) for the TTL."""
        size = len(document.encode())
        if size > self._options.max_bytes:
            raise InvalidInput(
                "query", f"is {size} bytes; persisted documents are at most {self.max_bytes}"
            )
        roundtrips.record("redis")
        try:
            await self._redis.client.set(KEY_PREFIX + sha256, document, ex=self._options.ttl_s)
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable("redis", str(exc) or type(exc).__name__) from exc
        except RedisError as exc:
            raise StoreRefused(f"redis refused a persisted query write: {exc}") from exc
