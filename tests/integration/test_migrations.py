from __future__ import annotations

import asyncio
import secrets

import asyncpg

from infra.local.profiles import Profile
from stores import GraphStore, PostgresOptions, PostgresStore
from stores.postgres.migrations import discover


async def test_postgres_migrations_are_idempotent_and_safe_concurrently(
    profile: Profile, stack_up: None
) -> None:
    name = f"polygraph_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(profile.postgres_dsn())
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        options = PostgresOptions(dsn=profile.postgres_dsn(name), min_size=1, max_size=2)
        async with PostgresStore(options) as first, PostgresStore(options) as second:
            applied = await asyncio.gather(first.migrate(), second.migrate())
            again = await first.migrate()
            async with first.connection() as conn:
                versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
        expected = [m.version for m in discover()]
        # One of the two racing gateways applied everything, the other nothing.
        assert sorted(applied, key=len) == [[], expected]
        assert again == []
        assert [row["version"] for row in versions] == expected
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_graph_migrations_are_recorded_and_idempotent(graph: GraphStore) -> None:
    await graph.migrate()
    assert await graph.migrate() == []
    async with graph.session() as session:
        result = await session.run("MATCH (m:SchemaMigration) RETURN m.version AS v ORDER BY v")
        versions = [record["v"] async for record in result]
    assert "0001" in versions
