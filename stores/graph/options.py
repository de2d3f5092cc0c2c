from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class GraphOptions:
    """How the gateway connects to Neo4j. Timeouts are in seconds."""

    uri: str
    user: str
    password: str
    database: str = "neo4j"
    max_pool_size: int = 20
    query_timeout: float = 10.0
    acquire_timeout: float = 5.0
    connect_timeout: float = 3.0
    # How long the driver retries a transaction that failed transiently. Short: a graph
    # field should come back null quickly when Neo4j is away, not after 30 s.
    max_retry_time: float = 1.0
    # Reads slower than this are logged (stores/slow.py).
    slow_query_s: float = 1.0
    # The CA that signed the server's certificate, for `bolt+s://` or `neo4j+s://` (the
    # driver checks it instead of the system's CAs); with it, `bolt://` is encrypted too.
    tls_ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.tls_ca_file and "+ssc://" in self.uri:
            raise ValueError("a `+ssc` URI trusts any certificate; drop it or the CA file")
        if self.max_pool_size < 1:
            raise ValueError("max_pool_size must be at least 1")
        if self.query_timeout <= 0 or self.acquire_timeout <= 0 or self.connect_timeout <= 0:
            raise ValueError("timeouts must be positive")

    def __repr__(self) -> str:
        # Keeps the password out of logs and tracebacks.
        return f"GraphOptions(uri={self.uri!r}, user={self.user!r}, database={self.database!r})"
