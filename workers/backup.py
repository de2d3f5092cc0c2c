"""`polygraph backup DIR` and `polygraph restore DIR`.

A backup directory holds:

    postgres.dump   pg_dump of the whole database, custom format: every table
                    (entities, audit, outbox, knowledge, metrics, migrations)
    redis.jsonl     optional: every key of the Redis database, DUMPed, with its expiry
    manifest.json   written last, so a directory with one is a complete backup: the
                    files' sha256, each table's row count, the server's version

Neo4j is not backed up: it is a projection of PostgreSQL, and a restore rebuilds it.
A restore checks the files against the manifest, recreates the database, restores
the dump in one transaction, checks every table's row count, applies migrations
this code has and the backup does not, then clears the graph's projection and
rebuilds it from PostgreSQL, and finally restores Redis's keys.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import orjson

from stores import GraphStore, PostgresStore, RedisStore
from stores.graph import GraphOptions, projection
from stores.postgres import PostgresOptions
from stores.postgres import dump as pg
from stores.postgres.dump import PgTools
from stores.redis import RedisOptions
from stores.redis.snapshot import KeySnapshot, export_keys, import_keys
from workers.graph_rebuild import RebuildReport, rebuild

Progress = Callable[[str, int, int], None]

MANIFEST = "manifest.json"
POSTGRES_FILE = "postgres.dump"
REDIS_FILE = "redis.jsonl"
FORMAT = 1
_REDIS_LINES_PER_BATCH = 500


class BackupError(Exception):
    """The backup or restore cannot go on; the message says what to do."""


@dataclass(frozen=True, slots=True)
class BackupReport:
    directory: Path
    tables: int
    rows: int
    dump_bytes: int
    redis_keys: int | None
    seconds: float


@dataclass(frozen=True, slots=True)
class RestoreReport:
    database: str
    tables: int
    rows: int
    migrations_applied: list[str]
    graph: RebuildReport
    redis_keys: int | None
    seconds: float


def _silent(stage: str, done: int, total: int) -> None:
    pass


def _new_directory(directory: Path) -> None:
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise BackupError(f"{directory} exists and is not an empty directory; name a new one")
    directory.mkdir(parents=True, exist_ok=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def backup(
    directory: Path,
    *,
    postgres_dsn: str,
    tools: PgTools,
    redis: RedisOptions | None = None,
    progress: Progress = _silent,
) -> BackupReport:
    """Back PostgreSQL (and, given `redis`, Redis's keys) up into `directory`, which
    must not exist or be empty."""
    started = time.perf_counter()
    _new_directory(directory)
    dump_path = directory / POSTGRES_FILE
    contents = await pg.dump(tools, postgres_dsn, dump_path, progress=progress)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created_at": datetime.now(UTC).isoformat(),
        "postgres": {
            "file": POSTGRES_FILE,
            "sha256": _sha256(dump_path),
            "database": pg.database_name(postgres_dsn),
            "server_version": contents.server_version,
            "tables": contents.tables,
        },
        "redis": None,
    }
    redis_keys = None
    if redis is not None:
        redis_keys = await _backup_redis(redis, directory / REDIS_FILE, progress)
        manifest["redis"] = {
            "file": REDIS_FILE,
            "sha256": _sha256(directory / REDIS_FILE),
            "keys": redis_keys,
        }
    (directory / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    return BackupReport(
        directory=directory,
        tables=len(contents.tables),
        rows=sum(contents.tables.values()),
        dump_bytes=dump_path.stat().st_size,
        redis_keys=redis_keys,
        seconds=round(time.perf_counter() - started, 3),
    )


async def _backup_redis(options: RedisOptions, path: Path, progress: Progress) -> int:
    written = 0
    async with RedisStore(options) as redis:
        with path.open("wb") as file:
            async for batch in export_keys(redis):
                for entry in batch:
                    file.write(
                        orjson.dumps(
                            {
                                "key": base64.b64encode(entry.key).decode(),
                                "expires_at_ms": entry.expires_at_ms,
                                "value": base64.b64encode(entry.value).decode(),
                            }
                        )
                        + b"\n"
                    )
                written += len(batch)
                progress("redis snapshot", written, 0)
    return written


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest, with its files checked against their sha256."""
    path = directory / MANIFEST
    if not path.is_file():
        raise BackupError(
            f"{directory} holds no complete backup ({MANIFEST} is missing); "
            "a backup that stopped half-way writes none"
        )
    try:
        manifest: dict[str, Any] = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise BackupError(f"{path} is not valid JSON: {exc}") from exc
    if manifest.get("format") != FORMAT:
        raise BackupError(
            f"{path} is format {manifest.get('format')!r}; this polygraph reads format {FORMAT}"
        )
    parts = [manifest["postgres"]] + ([manifest["redis"]] if manifest.get("redis") else [])
    for part in parts:
        file = directory / part["file"]
        if not file.is_file():
            raise BackupError(f"{file} is missing; the backup is incomplete")
        if _sha256(file) != part["sha256"]:
            raise BackupError(f"{file} does not match its sha256 in {MANIFEST}: it is damaged")
    return manifest


async def restore(
    directory: Path,
    *,
    postgres: PostgresOptions,
    graph: GraphOptions,
    tools: PgTools,
    redis: RedisOptions | None = None,
    maintenance_database: str = "postgres",
    replace: bool = False,
    graph_scope: Collection[UUID] | None = None,
    progress: Progress = _silent,
) -> RestoreReport:
    """Restore the backup in `directory` into the database `postgres.dsn` names.

    The backup is restored into a staging database and checked there; only then is
    an existing database dropped (when `replace` is set: its connections are ended,
    so stop the gateways first) and the staging one renamed in its place. `redis`,
    when given and the backup has a snapshot, gets its keys back. `graph_scope` limits
    the graph's clearing and pruning to those ids, for a Neo4j that other data shares
    (a test server); by default the whole projection is rebuilt.
    """
    started = time.perf_counter()
    manifest = read_manifest(directory)
    expected: dict[str, int] = manifest["postgres"]["tables"]
    name = pg.database_name(postgres.dsn)
    maintenance = pg.with_database(postgres.dsn, maintenance_database)
    if await pg.database_exists(maintenance, name) and not replace:
        raise BackupError(
            f"database {name!r} exists; pass --replace to drop it and restore the backup "
            "in its place (stop the gateways first: its connections are ended)"
        )
    # Restored and checked under another name first: a backup that fails to restore
    # leaves the existing database as it was.
    staging = pg.staging_name(name)
    staging_dsn = pg.with_database(postgres.dsn, staging)
    await pg.recreate_database(maintenance, staging)
    try:
        await pg.restore(
            tools,
            staging_dsn,
            directory / manifest["postgres"]["file"],
            tables=len(expected),
            progress=progress,
        )
        _check_counts(expected, (await pg.contents(staging_dsn)).tables)
    except BaseException:
        await pg.drop_database(maintenance, staging)
        raise
    await pg.replace_database(maintenance, staging, name)

    async with PostgresStore(postgres) as store, GraphStore(graph) as graph_store:
        applied = await store.migrate()
        await store.event_sinks.rebase_after_restore()
        await graph_store.migrate()
        scope = None if graph_scope is None else [str(i) for i in graph_scope]
        cleared = await projection.clear_projection(graph_store, subjects=scope)
        progress("graph cleared", cleared, cleared)
        rebuilt = await rebuild(
            store,
            graph_store,
            progress=progress,
            prune_only=graph_scope,
        )

    redis_keys = None
    if redis is not None and manifest.get("redis"):
        redis_keys = await _restore_redis(
            redis, directory / manifest["redis"]["file"], manifest["redis"]["keys"], progress
        )
    return RestoreReport(
        database=name,
        tables=len(expected),
        rows=sum(expected.values()),
        migrations_applied=applied,
        graph=rebuilt,
        redis_keys=redis_keys,
        seconds=round(time.perf_counter() - started, 3),
    )


def _check_counts(expected: dict[str, int], restored: dict[str, int]) -> None:
    differing = {
        table: (rows, restored.get(table))
        for table, rows in expected.items()
        if restored.get(table) != rows
    }
    if differing:
        listed = ", ".join(
            f"{t}: {want} rows backed up, {got} restored" for t, (want, got) in differing.items()
        )
        raise BackupError(
            f"the restored database differs from the backup ({listed}); "
            "the existing database was left as it was"
        )


async def _restore_redis(options: RedisOptions, path: Path, total: int, progress: Progress) -> int:
    restored = seen = 0
    async with RedisStore(options) as redis:
        batch: list[KeySnapshot] = []
        with path.open("rb") as file:
            for line in file:
                entry = orjson.loads(line)
                batch.append(
                    KeySnapshot(
                        base64.b64decode(entry["key"]),
                        entry["expires_at_ms"],
                        base64.b64decode(entry["value"]),
                    )
                )
                if len(batch) == _REDIS_LINES_PER_BATCH:
                    restored += await import_keys(redis, batch)
                    seen += len(batch)
                    progress("redis restore", seen, total)
                    batch = []
        restored += await import_keys(redis, batch)
        progress("redis restore", total, total)
    return restored
