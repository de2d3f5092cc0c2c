from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

if TYPE_CHECKING:
    from asyncpg import Connection, Record

# What `PostgresStore.connection()` lends out.
PgConnection: TypeAlias = "Connection[Record]"
# How pgvector's vectors travel (see stores.postgres.vectors).
VectorFormat = Literal["binary", "text"]
SslMode = Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]


@dataclass(frozen=True, kw_only=True)
class PostgresTLS:
    """TLS to PostgreSQL in libpq's terms. `apply` writes it into a DSN's query, so
    asyncpg and the client tools (`pg_dump`, `pg_restore`) read it alike; what is
    unset leaves the DSN's own parameters (and libpq's defaults) alone."""

    mode: SslMode | None = None
    root_cert: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate needs its key, and a key its certificate")

    def apply(self, dsn: str) -> str:
        given = {
            "sslmode": self.mode,
            "sslrootcert": self.root_cert,
            "sslcert": self.cert,
            "sslkey": self.key,
        }
        wanted = {name: value for name, value in given.items() if value is not None}
        if not wanted:
            return dsn
        parts = urlsplit(dsn)
        query = {**dict(parse_qsl(parts.query)), **wanted}
        return urlunsplit(parts._replace(query=urlencode(query)))


@dataclass(frozen=True, kw_only=True)
class PostgresOptions:
    """How the gateway connects to PostgreSQL. Timeouts are in seconds."""

    dsn: str
    min_size: int = 2
    max_size: int = 10
    statement_timeout: float = 10.0
    acquire_timeout: float = 5.0
    close_timeout: float = 10.0
    vector_format: VectorFormat = "binary"
    # Migrations run without a statement timeout; this bounds their waits for locks,
    # the migration lock another gateway holds included.
    migration_lock_timeout: float = 60.0
    # Statements slower than this are logged (stores/slow.py).
    slow_statement_s: float = 1.0
    # Streaming replicas for reads that tolerate lag (stores/postgres/replicas.py):
    # skipped while they lag more than `replica_max_lag_s`, checked this often.
    replica_dsns: tuple[str, ...] = ()
    replica_max_lag_s: float = 5.0
    replica_check_interval_s: float = 1.0

    def __post_init__(self) -> None:
        if self.replica_max_lag_s <= 0 or self.replica_check_interval_s <= 0:
            raise ValueError("replica_max_lag_s and replica_check_interval_s must be positive")
        if self.slow_statement_s <= 0:
            raise ValueError("slow_statement_s must be positive")
        if self.min_size < 0:
            raise ValueError("min_size must be 0 or more")
        if self.max_size < 1:
            raise ValueError("max_size must be at least 1")
        if self.min_size > self.max_size:
            raise ValueError("min_size is greater than max_size")
        if min(self.statement_timeout, self.acquire_timeout, self.migration_lock_timeout) <= 0:
            raise ValueError("timeouts must be positive")

    @property
    def write_memory_s(self) -> float:
        """How long a principal's last write position must be remembered. Past it, any
        replica still in use has replayed the write: it is checked at least every
        `3 * interval`, its lag measured against primary samples at most `interval`
        apart, and it is used only while that lag is within `replica_max_lag_s`."""
        return self.replica_max_lag_s + 4 * self.replica_check_interval_s + 1.0
