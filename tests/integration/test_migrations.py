from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import GraphStore, PostgresOptions, PostgresStore
from stores.graph.migrations import apply_migrations as apply_graph_migrations
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


async def test_graph_migrations_converge_when_two_gateways_race(
    settings: Settings, tmp_path: Path
) -> None:
    token = secrets.token_hex(4)
    version = f"9{int(token, 16)}"
    (tmp_path / f"{version}_race.cypher").write_text(
        f"CREATE INDEX race_{token} IF NOT EXISTS FOR (n:Race{token}) ON (n.id);\n"
        f"CREATE CONSTRAINT race_{token}_key IF NOT EXISTS"
        f" FOR (n:Race{token}) REQUIRE n.key IS UNIQUE;\n"
    )
    async with (
        GraphStore(settings.graph_options()) as one,
        GraphStore(settings.graph_options()) as two,
    ):
        async with one.session() as first, two.session() as second:
            applied = await asyncio.gather(
                apply_graph_migrations(first, tmp_path), apply_graph_migrations(second, tmp_path)
            )
        assert version in applied[0] + applied[1]
        async with one.session() as session:
            result = await session.run(
                "MATCH (m:SchemaMigration {version: $v}) RETURN count(m) AS n", v=version
            )
            assert (await result.single(strict=True))["n"] == 1
            await session.run("MATCH (m:SchemaMigration {version: $v}) DELETE m", v=version)
            await session.run(f"DROP INDEX race_{token} IF EXISTS")
            await session.run(f"DROP CONSTRAINT race_{token}_key IF EXISTS")
