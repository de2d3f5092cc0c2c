"""`polygraph backup` and `restore` on a database of their own: seed it, back it up,
drop everything, restore, and find every table, the graph and the Redis keys as
they were.

Neo4j is shared with every other worker, so the restore here scopes the graph's
clearing and pruning to this database's ids (`graph_scope`); the command itself
rebuilds the whole projection.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from infra.local.postgres_server import _pg_bin
from infra.local.profiles import Profile
from stores import GraphStore, RedisStore
from stores.graph import projection
from stores.postgres import dump
from stores.postgres.dump import DumpError, PgTools
from workers.backup import BackupError, backup, read_manifest, restore

CREATE_WORKFLOW = """
mutation($input: CreateWorkflowInput!) {
  createWorkflow(input: $input) { workflow { id } userErrors { message } projected }
}
"""
DEBIAN_PG15 = Path("/usr/lib/postgresql/15/bin")
# What differs by design after a rebuild: each node's version is the rebuild's horizon.
VERSION_PROPERTIES = {"outbox_id"}


def _run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


async def _admin(profile: Profile, sql: str) -> None:
    conn = await asyncpg.connect(profile.postgres_dsn())
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _tables(dsn: str) -> dict[str, list[str]]:
    """Every table's rows, as text, in a stable order."""
    conn = await asyncpg.connect(dsn)
    try:
        names = await conn.fetch(
            """
            SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS quoted
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%'
            ORDER BY 1
            """
        )
        tables = {}
        for row in names:
            name = row["quoted"]
            rows = await conn.fetch(f"SELECT t::text AS r FROM {name} t")
            tables[name] = sorted(r["r"] for r in rows)
        return tables
    finally:
        await conn.close()


async def _projected_ids(dsn: str) -> list[UUID]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT id FROM agents UNION ALL SELECT id FROM tasks"
            " UNION ALL SELECT id FROM workflows UNION ALL SELECT id FROM knowledge_items"
        )
        return [row["id"] for row in rows]
    finally:
        await conn.close()


async def _graph(settings: Settings, ids: list[UUID]) -> tuple[list[Any], list[Any]]:
    """The nodes with these ids and every relationship from or to them (steps
    included), without the version properties."""
    texts = [str(i) for i in ids]
    async with GraphStore(settings.graph_options()) as graph, graph.session() as session:
        nodes = await (
            await session.run(
                "MATCH (n) WHERE n.id IN $ids RETURN labels(n) AS labels, properties(n) AS p",
                ids=texts,
            )
        ).data()
        edges = await (
            await session.run(
                """
                MATCH (a)-[r]-(b) WHERE a.id IN $ids
                OPTIONAL MATCH (b)-[:PRECEDES]->(next:Step)
                RETURN type(r) AS type, startNode(r) = a AS outgoing, a.id AS a,
                       coalesce(b.id, b.key) AS b, properties(r) AS p,
                       properties(b) AS target, next.key AS next
                """,
                ids=texts,
            )
        ).data()

    def clean(properties: dict[str, Any]) -> str:
        kept = {k: v for k, v in properties.items() if k not in VERSION_PROPERTIES}
        return json.dumps(kept, sort_keys=True, default=str)

    node_rows = sorted(json.dumps([sorted(n["labels"]), clean(n["p"])]) for n in nodes)
    edge_rows = sorted(
        json.dumps(
            [e["type"], e["outgoing"], e["a"], e["b"], clean(e["p"]), clean(e["target"]), e["next"]]
        )
        for e in edges
    )
    return node_rows, edge_rows


@pytest.fixture
def database(profile: Profile, stack_up: None) -> Iterator[str]:
    name = f"polygraph_backup_{secrets.token_hex(4)}"
    asyncio.run(_admin(profile, f'CREATE DATABASE "{name}"'))
    yield name
    asyncio.run(_admin(profile, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def forget_in_graph(settings: Settings) -> Iterator[list[UUID]]:
    """Ids whose nodes leave Neo4j, shared by every test, when the test is done."""
    ids: list[UUID] = []
    yield ids

    async def forget() -> None:
        async with GraphStore(settings.graph_options()) as graph:
            await projection.clear_projection(graph, subjects=[str(i) for i in ids])

    if ids:
        asyncio.run(forget())


def test_backup_drop_everything_restore_and_find_it_all_again(
    settings: Settings,
    profile: Profile,
    database: str,
    tmp_path: Path,
    forget_in_graph: list[UUID],
) -> None:
    dsn = profile.postgres_dsn(database)
    own = settings.model_copy(update={"postgres_dsn": SecretStr(dsn)})
    env = {
        **os.environ,
        "POLYGRAPH_POSTGRES_DSN": dsn,
        "POLYGRAPH_NEO4J_URI": settings.neo4j_uri,
        "POLYGRAPH_NEO4J_PASSWORD": settings.neo4j_password.get_secret_value(),
        "POLYGRAPH_REDIS_URL": settings.redis_url.get_secret_value(),
    }
    seeded = _run_cli(
        env,
        *("seed", "--agents", "12", "--tasks", "40", "--metrics-days", "0.02"),
        *("--seed", str(secrets.randbelow(10**9))),
    )
    assert seeded.returncode == 0, seeded.stderr
    created = _run_cli(
        env, "users", "create", "--email", f"{database}@example.com", "--role", "admin"
    )
    assert created.returncode == 0, created.stderr
    (admin_key,) = [
        line.split(": ", 1)[1]
        for line in created.stdout.splitlines()
        if line.startswith("API key: ")
    ]
    # Workflows (with steps in the graph), audit rows and idempotency keys, through the API.
    with TestClient(create_app(own)) as client:
        for n in range(2):
            response = client.post(
                "/graphql",
                headers={"x-api-key": admin_key},
                json={
                    "query": CREATE_WORKFLOW,
                    "variables": {
                        "input": {
                            "name": f"release {n}",
                            "definition": {
                                "steps": [
                                    {"id": "build", "name": "Build", "estimate": 2},
                                    {"id": "ship", "name": "Ship", "estimate": 1},
                                ],
                                "edges": [{"from": "build", "to": "ship"}],
                            },
                            "idempotencyKey": f"workflow-{n}",
                        }
                    },
                },
            )
            payload = response.json()["data"]["createWorkflow"]
            assert payload["userErrors"] == [] and payload["projected"], response.json()

    redis_key = f"backup-test:{database}".encode()

    async def write_redis() -> None:
        async with RedisStore(settings.redis_options()) as redis:
            await redis.client.hset(redis_key, mapping={"a": "1", "b": "two"})
            await redis.client.expire(redis_key, 3600)
            await redis.client.set(redis_key + b":forever", b"\x00\xffbinary")

    asyncio.run(write_redis())
    tables_before = asyncio.run(_tables(dsn))
    ids = asyncio.run(_projected_ids(dsn))
    forget_in_graph.extend(ids)
    graph_before = asyncio.run(_graph(own, ids))
    # Something in every kind of table the issue names, so that comparing is not vacuous.
    for table in (
        "public.agents", "public.tasks", "public.task_events", "public.workflows",
        "public.audit_log", "public.outbox", "public.idempotency_keys", "public.knowledge_items", "public.users",
        "public.schema_migrations",
    ):  # fmt: skip
        assert tables_before[table], table
    assert any(name.startswith("metrics.") and rows for name, rows in tables_before.items())
    assert graph_before[0] and graph_before[1]

    directory = tmp_path / "backup"
    backed_up = _run_cli(env, "backup", str(directory), "--redis")
    assert backed_up.returncode == 0, backed_up.stderr
    assert "postgres dump" in backed_up.stderr  # the progress bar
    assert f"backup: {len(tables_before)} tables" in backed_up.stdout
    manifest = read_manifest(directory)
    assert manifest["postgres"]["tables"] == {
        name.replace('"', ""): len(rows) for name, rows in tables_before.items()
    }
    assert manifest["redis"]["keys"] >= 2

    again = _run_cli(env, "backup", str(directory))
    assert again.returncode == 1
    assert "exists and is not an empty directory" in again.stderr

    # Drop everything: the database, this database's graph, the Redis keys.
    async def drop_everything() -> None:
        await _admin(profile, f'DROP DATABASE "{database}" WITH (FORCE)')
        async with GraphStore(settings.graph_options()) as graph:
            await projection.clear_projection(graph, subjects=[str(i) for i in ids])
        async with RedisStore(settings.redis_options()) as redis:
            await redis.client.delete(redis_key, redis_key + b":forever")

    asyncio.run(drop_everything())
    assert asyncio.run(_graph(own, ids)) == ([], [])

    # A database in the way is refused without --replace, and left alone.
    asyncio.run(_admin(profile, f'CREATE DATABASE "{database}"'))
    refused = _run_cli(env, "restore", str(directory))
    assert refused.returncode == 1
    assert f"database '{database}' exists; pass --replace" in refused.stderr

    async def restore_it() -> Any:
        # The local stack's own PostgreSQL tools, as the command would find them.
        tools = await PgTools.find([_pg_bin()])
        return await restore(
            directory,
            postgres=own.postgres_options(),
            graph=own.graph_options(),
            tools=tools,
            redis=own.redis_options(),
            replace=True,
            graph_scope=ids,
        )

    report = asyncio.run(restore_it())
    assert report.migrations_applied == []
    assert report.graph.agents == 12 and report.graph.tasks == 40
    assert asyncio.run(_tables(dsn)) == tables_before
    assert asyncio.run(_graph(own, ids)) == graph_before

    async def read_redis() -> tuple[Any, ...]:
        async with RedisStore(settings.redis_options()) as redis:
            return (
                await redis.client.hgetall(redis_key),
                await redis.client.ttl(redis_key),
                await redis.client.get(redis_key + b":forever"),
            )

    fields, ttl, forever = asyncio.run(read_redis())
    assert fields == {b"a": b"1", b"b": b"two"}
    assert 0 < ttl <= 3600
    assert forever == b"\x00\xffbinary"

    async def forget_redis() -> None:
        async with RedisStore(settings.redis_options()) as redis:
            await redis.client.delete(redis_key, redis_key + b":forever")

    asyncio.run(forget_redis())


def test_a_damaged_or_missing_backup_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="holds no complete backup"):
        read_manifest(tmp_path)
    (tmp_path / "postgres.dump").write_bytes(b"PGDMP not really")
    (tmp_path / "manifest.json").write_text(
        json.dumps(
            {"format": 1, "postgres": {"file": "postgres.dump", "sha256": "0" * 64, "tables": {}}}
        )
    )
    with pytest.raises(BackupError, match="does not match its sha256"):
        read_manifest(tmp_path)


async def test_an_older_pg_dump_is_refused_before_it_starts(
    settings: Settings, tmp_path: Path
) -> None:
    tools = await PgTools.find([DEBIAN_PG15])
    assert tools.major == 15
    with pytest.raises(DumpError, match=r"pg_dump 15 .* cannot back up a PostgreSQL 18 server"):
        await dump.dump(
            tools, settings.postgres_dsn.get_secret_value(), tmp_path / "x", progress=print
        )
    assert not (tmp_path / "x").exists()


async def test_a_restore_that_fails_its_check_leaves_the_existing_database(
    settings: Settings, profile: Profile, database: str, tmp_path: Path
) -> None:
    dsn = profile.postgres_dsn(database)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept VALUES (1)")
    finally:
        await conn.close()
    tools = await PgTools.find([_pg_bin()])
    directory = tmp_path / "backup"
    await backup(directory, postgres_dsn=dsn, tools=tools)
    # The manifest now expects rows the dump does not hold.
    manifest_path = directory / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["postgres"]["tables"]["public.kept"] = 2
    manifest_path.write_text(json.dumps(manifest))
    own = settings.model_copy(update={"postgres_dsn": SecretStr(dsn)})
    with pytest.raises(BackupError, match=r"public.kept: 2 rows backed up, 1 restored.*left as it"):
        await restore(
            directory,
            postgres=own.postgres_options(),
            graph=own.graph_options(),
            tools=tools,
            replace=True,
        )
    conn = await asyncpg.connect(dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM kept") == 1
        staging = await conn.fetchval(
            "SELECT count(*) FROM pg_database WHERE datname = $1", dump.staging_name(database)
        )
        assert staging == 0
    finally:
        await conn.close()
