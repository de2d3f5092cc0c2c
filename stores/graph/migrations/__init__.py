"""Versioned Cypher migrations: constraints and indexes, recorded in the graph.

Files are named `NNNN_description.cypher`, statements separated by `;`. Every
statement must be idempotent (`IF NOT EXISTS`) because Neo4j cannot wrap schema
changes in a transaction with the version record.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neo4j import AsyncManagedTransaction, AsyncSession
from neo4j.exceptions import ClientError

MIGRATIONS_DIR = Path(__file__).parent


@dataclass(frozen=True)
class CypherMigration:
    version: str
    name: str
    statements: tuple[str, ...]


def discover(directory: Path = MIGRATIONS_DIR) -> list[CypherMigration]:
    migrations = []
    for path in sorted(directory.glob("*.cypher")):
        version, _, name = path.stem.partition("_")
        lines = [ln for ln in path.read_text().splitlines() if not ln.strip().startswith("//")]
        statements = tuple(s.strip() for s in "\n".join(lines).split(";") if s.strip())
        migrations.append(CypherMigration(version, name, statements))
    return migrations


# `IF NOT EXISTS` is checked before the schema lock is taken, so a gateway racing
# another can still be told the rule exists: that is the outcome it wanted.
_ALREADY_EXISTS = frozenset(
    {
        "Neo.ClientError.Schema.EquivalentSchemaRuleAlreadyExists",
        "Neo.ClientError.Schema.ConstraintAlreadyExists",
        "Neo.ClientError.Schema.IndexAlreadyExists",
    }
)


async def _write(tx: AsyncManagedTransaction, statement: str, params: dict[str, Any]) -> None:
    result = await tx.run(statement, params)
    await result.consume()


async def apply_migrations(session: AsyncSession, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply what is pending; returns the versions this call applied.

    Two gateways migrating a new database at once can deadlock on schema locks;
    managed transactions retry such transient errors, and every statement is
    idempotent, so both converge.
    """

    async def write(statement: str, **params: Any) -> None:
        try:
            await session.execute_write(_write, statement, params)
        except ClientError as exc:
            if exc.code not in _ALREADY_EXISTS:
                raise

    await write(
        "CREATE CONSTRAINT schema_migration_version IF NOT EXISTS "
        "FOR (m:SchemaMigration) REQUIRE m.version IS UNIQUE"
    )
    result = await session.run("MATCH (m:SchemaMigration) RETURN m.version AS version")
    done = {record["version"] async for record in result}
    applied_now = []
    for migration in discover(directory):
        if migration.version in done:
            continue
        for statement in migration.statements:
            await write(statement)
        await write(
            "MERGE (m:SchemaMigration {version: $version}) "
            "ON CREATE SET m.name = $name, m.applied_at = datetime()",
            version=migration.version,
            name=migration.name,
        )
        applied_now.append(migration.version)
    return applied_now
