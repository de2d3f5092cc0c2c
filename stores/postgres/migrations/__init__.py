"""Versioned SQL migrations, applied in order, each in its own transaction.

Files are named `NNNN_description.sql`. An advisory lock serialises gateways that
start at the same time; a checksum per version refuses a migration edited after
it was applied. Migrations run without a statement timeout (building an index on
a large table takes what it takes) but wait for locks at most `lock_timeout`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from stores.errors import StoreRefused
from stores.postgres.advisory import lock_holder

MIGRATIONS_DIR = Path(__file__).parent
# Any constant works as long as nothing else in the database takes the same lock.
_ADVISORY_LOCK_KEY = 0x706F6C79_6D696772  # "polymigr"


class MigrationError(StoreRefused):
    """The schema cannot be brought to, or is not at, the version this code needs."""


class MigrationLockTimeout(MigrationError):
    """Another session held a lock the migrations needed for longer than `lock_timeout`."""


class SchemaOutdated(MigrationError):
    """Migrations this code needs have not been applied (and were not to be)."""

    def __init__(self, pending: list[str]) -> None:
        super().__init__(f"PostgreSQL lacks migrations {', '.join(pending)}")
        self.pending = pending


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def discover(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        version, _, name = path.stem.partition("_")
        if not version.isdigit():
            raise MigrationError(f"{path.name}: migration files are named NNNN_description.sql")
        migrations.append(Migration(version, name, path.read_text()))
    return migrations


async def pending_migrations(
    conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR
) -> list[Migration]:
    """What this code has and the database has not applied, oldest first. A migration
    edited after it was applied is an error. Versions the database has and this code
    does not (a newer gateway migrated it) are fine: migrations only add."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return discover(directory)
    rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
    done = {row["version"]: row["checksum"] for row in rows}
    pending = []
    for migration in discover(directory):
        if migration.version not in done:
            pending.append(migration)
        elif done[migration.version] != migration.checksum:
            raise MigrationError(
                f"migration {migration.version}_{migration.name} changed after it was "
                "applied; add a new migration instead of editing an applied one"
            )
    return pending


async def apply_migrations(
    conn: asyncpg.Connection, directory: Path = MIGRATIONS_DIR, *, lock_timeout: float
) -> list[str]:
    """Apply what is pending; returns the versions this call applied.

    Sets the session's timeouts, so `conn` must be a connection of its own, not a
    pooled one. Waiting more than `lock_timeout` seconds, for the migration lock or a
    table lock, raises `MigrationLockTimeout` naming who holds the migration lock.
    """
    await conn.execute(
        "SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', $1, false)",
        f"{max(1, round(lock_timeout * 1000))}ms",
    )
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    except asyncpg.LockNotAvailableError as exc:
        holder = await lock_holder(conn, _ADVISORY_LOCK_KEY)
        raise MigrationLockTimeout(
            f"waited {lock_timeout:g} s for the migration lock, held by {holder}"
        ) from exc
    applied_now: list[str] = []
    try:
        await conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    text PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        for migration in await pending_migrations(conn, directory):
            try:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum)"
                        " VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            except asyncpg.LockNotAvailableError as exc:
                raise MigrationLockTimeout(
                    f"migration {migration.version}_{migration.name} waited {lock_timeout:g} s"
                    " for a lock on a table other sessions are using"
                ) from exc
            applied_now.append(migration.version)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _ADVISORY_LOCK_KEY)
    return applied_now
