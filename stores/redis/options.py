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
    # TLS (a `rediss://`, `rediss+sentinel://` or `rediss+cluster://` URL): the CA that
    # signed the servers' certificates (unset: the system's), and a client certificate
    # and key for servers that ask for one.
    tls_ca_file: str | None = None
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    target: RedisTarget = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        target = parse_redis_url(self.url)
        tls_files = (self.tls_ca_file, self.tls_cert_file, self.tls_key_file)
        if any(tls_files) and not target.tls:
            raise ValueError(
                "TLS files are for a rediss://, rediss+sentinel:// or rediss+cluster:// URL;"
                " this one is not"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        if self.command_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        object.__setattr__(self, "target", target)

    def __repr__(self) -> str:
        return f"RedisOptions(max_connections={self.max_connections})"
