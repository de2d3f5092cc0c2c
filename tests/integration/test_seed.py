"""`polygraph seed` on a database of its own: rows by COPY, graph by rebuild."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys

import asyncpg

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import GraphStore


async def _graph_agent_count(settings: Settings, agent_ids: list[str]) -> int:
    async with GraphStore(settings.graph_options()) as graph, graph.session() as session:
        result = await session.run(
            "MATCH (a:Agent) WHERE a.id IN $ids RETURN count(a) AS n", ids=agent_ids
        )
        record = await result.single(strict=True)
        count: int = record["n"]
        return count


async def _fresh_database(profile: Profile, name: str, *, drop: bool = False) -> None:
    conn = await asyncpg.connect(profile.postgres_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def _forget_in_graph(settings: Settings, ids: list[str]) -> None:
    async with GraphStore(settings.graph_options()) as graph, graph.session() as session:
        await session.run("MATCH (n) WHERE n.id IN $ids DETACH DELETE n", ids=ids)


async def _ids(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id::text AS id FROM agents UNION ALL SELECT id::text FROM tasks"
            " UNION ALL SELECT id::text FROM knowledge_items"
        )
        return [row["id"] for row in rows]
    finally:
        await conn.close()


async def _graph_knowledge_count(settings: Settings, ids: list[str]) -> int:
    async with GraphStore(settings.graph_options()) as graph, graph.session() as session:
        result = await session.run(
            "MATCH (k:Knowledge) WHERE k.id IN $ids RETURN count(k) AS n", ids=ids
        )
        record = await result.single(strict=True)
        count: int = record["n"]
        return count


async def _knowledge_ids(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [row["id"] for row in await conn.fetch("SELECT id::text FROM knowledge_items")]
    finally:
        await conn.close()


async def _seeded(dsn: str) -> tuple[dict[str, int], list[str], int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM agents) AS agents, (SELECT count(*) FROM tasks) AS tasks,"
            " (SELECT count(*) FROM task_events) AS events,"
            " (SELECT count(*) FROM task_dependencies) AS dependencies"
        )
        assert row is not None
        counts = dict(row)
        # By id: other seeded data in the shared Neo4j may reuse a name.
        agent_ids = [row["id"] for row in await conn.fetch("SELECT id::text AS id FROM agents")]
        pending = await conn.fetchval("SELECT count(*) FROM outbox WHERE processed_at IS NULL")
        return counts, agent_ids, pending
    finally:
        await conn.close()


def test_seed_loads_rows_and_projects_them(settings: Settings, profile: Profile) -> None:
    database = f"polygraph_seed_{secrets.token_hex(4)}"
    asyncio.run(_fresh_database(profile, database))
    env = {
        **os.environ,
        "POLYGRAPH_POSTGRES_DSN": profile.postgres_dsn(database),
        "POLYGRAPH_NEO4J_URI": settings.neo4j_uri,
        "POLYGRAPH_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
    }
    try:
        command = [sys.executable, "-m", "gateway.cli", "seed", "--agents", "30", "--tasks", "120"]
        # A different seed from the default keeps names apart from other seeded data.
        command += ["--seed", str(secrets.randbelow(10**9))]
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        assert first.returncode == 0, first.stderr
        assert "30 agents" in first.stdout and "rows/s" in first.stdout
        counts, agent_ids, pending = asyncio.run(_seeded(profile.postgres_dsn(database)))
        assert counts["agents"] == 30 and counts["tasks"] == 120
        assert counts["events"] == 120
        assert pending == 0
        assert asyncio.run(_graph_agent_count(settings, agent_ids)) == 30
        # Knowledge items too, without a `graph rebuild`.
        knowledge = asyncio.run(_knowledge_ids(profile.postgres_dsn(database)))
        assert len(knowledge) == 90
        assert asyncio.run(_graph_knowledge_count(settings, knowledge)) == 90

        again = subprocess.run(
            [*command, "--if-empty"], env=env, capture_output=True, text=True, timeout=300
        )
        assert again.returncode == 0, again.stderr
        assert "nothing to do" in again.stdout
    finally:
        asyncio.run(_forget_in_graph(settings, asyncio.run(_ids(profile.postgres_dsn(database)))))
        asyncio.run(_fresh_database(profile, database, drop=True))
