"""PostgreSQL: the source of truth."""

from stores.postgres.options import PostgresOptions
from stores.postgres.store import PostgresStore

__all__ = ["PostgresOptions", "PostgresStore"]
