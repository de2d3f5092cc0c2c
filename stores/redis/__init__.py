"""Redis: sessions, cache, rate limits, locks and pub/sub."""

from stores.redis.options import RedisOptions
from stores.redis.store import RedisStore

__all__ = ["RedisOptions", "RedisStore"]
