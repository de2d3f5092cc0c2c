from __future__ import annotations

from dataclasses import dataclass, field

from stores.redis.clients import RedisTarget, parse_redis_url


@dataclass(frozen=True, kw_only=True)
class RedisOptions:
    """How the gateway connects to Redis (see stores.redis.clients for the URLs).
    Timeouts are in seconds."""

    url: str
    max_connections: int = 50
    command_timeout: float = 2.0
    connect_timeout: float = 2.0
    target: RedisTarget = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.command_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        object.__setattr__(self, "target", parse_redis_url(self.url))

    def __repr__(self) -> str:
        return f"RedisOptions(max_connections={self.max_connections})"
