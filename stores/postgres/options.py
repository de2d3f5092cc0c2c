from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

if TYPE_CHECKING:
    from asyncpg import Record
    from asyncpg.pool import PoolConnectionProxy

# What `PostgresStore.connection()` lends out.
PgConnection: TypeAlias = "PoolConnectionProxy[Record]"
# How pgvector's vectors travel (see stores.postgres.vectors).
VectorFormat = Literal["binary", "text"]


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

    def __post_init__(self) -> None:
        if self.min_size < 0:
            raise ValueError("min_size must be 0 or more")
        if self.max_size < 1:
            raise ValueError("max_size must be at least 1")
        if self.min_size > self.max_size:
            raise ValueError("min_size is greater than max_size")
        if min(self.statement_timeout, self.acquire_timeout, self.migration_lock_timeout) <= 0:
            raise ValueError("timeouts must be positive")
