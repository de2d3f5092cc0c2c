from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from gateway.startup import StartupRefused, prepare_postgres
from infra.local.profiles import Profile
from stores import GraphStore, PostgresOptions, PostgresStore, StoreUnavailable
from stores.graph.migrations import apply_migrations as apply_graph_migrations
from stores.postgres.migrations import _ADVISORY_LOCK_KEY, discover
from tests.support.gate import Gate
from tests.support.waiting import until


@pytest.fixture
async def fresh_dsn(profile: Profile, stack_up: None) -> AsyncIterator[str]:
    """An empty database of this test's own."""
    name = f"polygraph_migrate_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(profile.postgres_dsn())
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield profile.postgres_dsn(name)
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def _hold_migration_lock(dsn: str) -> asyncpg.Connection:
    """A session that holds the migration lock, as a gateway in mid-migration does."""
    holder = await asyncpg.connect(dsn, server_settings={"application_name": "other-migrator"})
    await holder.execute("SELECT pg_advisory_lock($1)", _ADVISORY_LOCK_KEY)
    return holder


async def _lock_waiters_past(dsn: str, seconds: float) -> int:
    """Sessions that have waited longer than `seconds` for the migration lock."""
    async with asyncpg.create_pool(dsn, min_size=1, max_size=1) as pool:
        count: int = await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock' AND wait_event = 'advisory'"
            " AND now() - query_start > make_interval(secs => $1)",
            seconds,
        )
    return count


async def test_migrators_wait_for_the_lock_beyond_the_statement_timeout(fresh_dsn: str) -> None:
    # Two gateways start while a third migrates, and its migration outlasts their
    # statement timeout: they wait for the lock (not for a statement), then find
    # their work done, or do it.
    options = PostgresOptions(dsn=fresh_dsn, min_size=0, max_size=2, statement_timeout=1.0)
    holder = await _hold_migration_lock(fresh_dsn)
    async with PostgresStore(options) as first, PostgresStore(options) as second:
        both = asyncio.gather(first.migrate(), second.migrate())

        async def both_waited_past_the_statement_timeout() -> bool:
            return both.done() or await _lock_waiters_past(fresh_dsn, 3.0) == 2

        try:
            await until(both_waited_past_the_statement_timeout)
            assert not both.done(), both.exception()
        finally:
            await holder.close()
        applied = await both
    assert sorted(applied, key=len) == [[], [m.version for m in discover()]]


async def test_a_gateway_refuses_to_start_while_the_lock_stays_taken(
    settings: Settings, fresh_dsn: str
) -> None:
    holder = await _hold_migration_lock(fresh_dsn)
    try:
        own = settings.model_copy(
            update={"postgres_dsn": SecretStr(fresh_dsn), "migration_lock_timeout_s": 0.5}
        )
        with pytest.raises(StartupRefused) as refused, TestClient(create_app(own)):
            pass
    finally:
        await holder.close()
    message = str(refused.value)
    assert "waited 0.5 s for the migration lock, held by server process" in message
    assert "other-migrator" in message and "POLYGRAPH_MIGRATION_LOCK_TIMEOUT_S" in message


async def test_a_gateway_that_does_not_migrate_refuses_an_old_schema(
    settings: Settings, fresh_dsn: str
) -> None:
    own = settings.model_copy(
        update={"postgres_dsn": SecretStr(fresh_dsn), "migrate_on_start": False}
    )
    with (
        pytest.raises(StartupRefused, match="run `polygraph migrate`"),
        TestClient(create_app(own)),
    ):
        pass
    async with PostgresStore(PostgresOptions(dsn=fresh_dsn, min_size=0)) as store:
        await store.migrate()
        await store.check_schema()  # raises while migrations are missing


async def test_a_server_down_at_start_is_served_only_once_migrated(
    settings: Settings, fresh_dsn: str
) -> None:
    host_port = fresh_dsn.split("@", 1)[1].split("/", 1)[0]
    async with Gate("127.0.0.1", int(host_port.rsplit(":", 1)[1])) as gate:
        gate.close()
        through_gate = fresh_dsn.replace(host_port, f"127.0.0.1:{gate.port}")
        options = PostgresOptions(dsn=through_gate, min_size=0, acquire_timeout=1.0)
        async with PostgresStore(options) as store:
            await prepare_postgres(store, settings)
            with pytest.raises(StoreUnavailable, match="schema is not checked yet"):
                async with store.connection():
                    pass
            gate.open()
            async with store.connection() as conn:
                versions = await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")
    assert [row["version"] for row in versions] == [m.version for m in discover()]


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
