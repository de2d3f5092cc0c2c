"""Backups of the PostgreSQL database with PostgreSQL's own tools: `pg_dump` in custom
format, `pg_restore` into a recreated database, and the SQL around them.

The tools get the DSN as libpq reads it (TLS parameters included) with the password
moved into PGPASSWORD, so that it shows in no process list. Their `--verbose` lines
drive the progress callback: one step per table dumped or restored.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

from stores._tls import describe_failure
from stores.errors import StoreRefused, StoreUnavailable

NAME = "postgres"
Progress = Callable[[str, int, int], None]

_DUMPED_TABLE = re.compile(r'^pg_dump: dumping contents of table "(?P<table>[^"]+)"')
_RESTORED_TABLE = re.compile(r'^pg_restore: processing data for table "(?P<table>[^"]+)"')
# Kept for an error message: what the tools say that is not progress.
_KEEP_LINES = 20


class DumpError(StoreRefused):
    """`pg_dump` or `pg_restore` could not do its work; the message says why."""


@dataclass(frozen=True, slots=True)
class PgTools:
    """The directory holding `pg_dump` and `pg_restore`, and their major version."""

    bin_dir: Path
    major: int

    @classmethod
    async def find(cls, candidates: list[Path]) -> PgTools:
        """The first of `candidates` that holds both tools, else those on PATH."""
        for directory in candidates:
            if (directory / "pg_dump").is_file() and (directory / "pg_restore").is_file():
                return cls(directory, await _major_version(directory / "pg_dump"))
        found = shutil.which("pg_dump")
        if found is not None and shutil.which("pg_restore") is not None:
            return cls(Path(found).parent, await _major_version(Path(found)))
        raise DumpError(
            "pg_dump and pg_restore were not found; install PostgreSQL's client tools (the "
            "server's major version or newer) or set POLYGRAPH_POSTGRES_BIN_DIR to their directory"
        )

    def check_server(self, server_major: int) -> None:
        # pg_dump refuses a newer server anyway, but only after connecting, and says less.
        if self.major < server_major:
            raise DumpError(
                f"pg_dump {self.major} ({self.bin_dir}) cannot back up a PostgreSQL "
                f"{server_major} server; point POLYGRAPH_POSTGRES_BIN_DIR at PostgreSQL "
                f"{server_major}'s (or a newer) bin directory"
            )


@dataclass(frozen=True, slots=True)
class DatabaseContents:
    """What a database holds, as a backup records it and a restore checks it."""

    server_version: str
    server_major: int
    # "schema.table" -> rows
    tables: dict[str, int]


async def _major_version(binary: Path) -> int:
    process = await asyncio.create_subprocess_exec(
        str(binary),
        "--version",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    match = re.search(r"\) (\d+)", output.decode(errors="replace"))
    if process.returncode != 0 or match is None:
        raise DumpError(f"{binary} --version failed: {output.decode(errors='replace').strip()}")
    return int(match.group(1))


def database_name(dsn: str) -> str:
    name = unquote(urlsplit(dsn).path.lstrip("/"))
    if not name:
        raise DumpError("the PostgreSQL DSN names no database (postgresql://.../DATABASE)")
    return name


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` (the maintenance database, for a restore)."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=30)
    except (OSError, asyncpg.CannotConnectNowError, asyncpg.ConnectionFailureError) as exc:
        raise StoreUnavailable(NAME, describe_failure(exc)) from exc


async def contents(dsn: str) -> DatabaseContents:
    """The server's version and every ordinary table's exact row count (system schemas
    and extensions' own tables aside): what a restore must bring back."""
    conn = await _connect(dsn)
    try:
        return await _contents(conn)
    finally:
        await conn.close()


async def _contents(conn: asyncpg.Connection) -> DatabaseContents:
    version_num = int(await conn.fetchval("SHOW server_version_num"))
    version = str(await conn.fetchval("SHOW server_version"))
    names = await conn.fetch(
        """
        SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS quoted,
               n.nspname || '.' || c.relname AS name
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_%'
          AND NOT EXISTS (  -- an extension's own tables come back with the extension
            SELECT 1 FROM pg_depend d
            WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 2
        """
    )
    tables: dict[str, int] = {}
    for row in names:
        # A partitioned table's count takes in its partitions. The identifiers come
        # from the catalogue, quoted by the server.
        tables[row["name"]] = int(await conn.fetchval(f"SELECT count(*) FROM {row['quoted']}"))
    return DatabaseContents(version, version_num // 10000, tables)


async def database_exists(maintenance_dsn: str, name: str) -> bool:
    conn = await _connect(maintenance_dsn)
    try:
        found = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
    finally:
        await conn.close()
    return found is not None


def staging_name(name: str) -> str:
    """Where a restore lands before it replaces `name` (within the 63-byte limit)."""
    suffix = "_restoring"
    return name.encode()[: 63 - len(suffix)].decode(errors="ignore") + suffix


def _quoted(name: str) -> str:
    # A database name cannot be a parameter: it is quoted as an identifier instead.
    return '"' + name.replace('"', '""') + '"'


async def _maintain(maintenance_dsn: str, what: str, statements: list[str]) -> None:
    conn = await _connect(maintenance_dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    except asyncpg.PostgresError as exc:
        raise DumpError(f"could not {what}: {exc}") from exc
    finally:
        await conn.close()


async def recreate_database(maintenance_dsn: str, name: str) -> None:
    """Drop database `name` (ending its connections) and create it empty."""
    await _maintain(
        maintenance_dsn,
        f"recreate database {name!r}",
        [
            f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)",
            f"CREATE DATABASE {_quoted(name)}",
        ],
    )


async def drop_database(maintenance_dsn: str, name: str) -> None:
    await _maintain(
        maintenance_dsn,
        f"drop database {name!r}",
        [f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)"],
    )


async def replace_database(maintenance_dsn: str, source: str, target: str) -> None:
    """Drop `target` (ending its connections) and rename `source` to it."""
    await _maintain(
        maintenance_dsn,
        f"put database {source!r} in the place of {target!r} (the restored copy is "
        f"still there under {source!r})",
        [
            f"DROP DATABASE IF EXISTS {_quoted(target)} WITH (FORCE)",
            f"ALTER DATABASE {_quoted(source)} RENAME TO {_quoted(target)}",
        ],
    )


async def dump(tools: PgTools, dsn: str, target: Path, *, progress: Progress) -> DatabaseContents:
    """`pg_dump` of the whole database into `target`, in custom format; returns what
    the dump holds. The row counts and the dump read one snapshot (exported by a
    transaction held open meanwhile), so writes going on do not set them apart."""
    conn = await _connect(dsn)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            snapshot = str(await conn.fetchval("SELECT pg_export_snapshot()"))
            held = await _contents(conn)
            tools.check_server(held.server_major)
            await _run(
                tools.bin_dir / "pg_dump",
                ["--format=custom", "--verbose", f"--snapshot={snapshot}", f"--file={target}"],
                dsn,
                _DUMPED_TABLE,
                stage="postgres dump",
                total=len(held.tables),
                progress=progress,
            )
    finally:
        await conn.close()
    return held


async def restore(
    tools: PgTools, dsn: str, source: Path, *, tables: int, progress: Progress
) -> None:
    """`pg_restore` of `source` into the (empty) database `dsn` names, in one
    transaction: it all lands, or nothing does. Owners and grants are left out, so
    the restoring role owns what it restores."""
    await _run(
        tools.bin_dir / "pg_restore",
        [
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-privileges",
            "--verbose",
            str(source),
        ],
        dsn,
        _RESTORED_TABLE,
        stage="postgres restore",
        total=tables,
        progress=progress,
    )


def _libpq_environment(dsn: str) -> tuple[str, Mapping[str, str]]:
    """The DSN without its password, and the environment that carries the password."""
    parts = urlsplit(dsn)
    environment = dict(os.environ)
    if parts.password is not None:
        environment["PGPASSWORD"] = unquote(parts.password)
        userinfo, _, host = parts.netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        parts = parts._replace(netloc=f"{user}@{host}")
    return urlunsplit(parts), environment


async def _run(
    binary: Path,
    arguments: list[str],
    dsn: str,
    step: re.Pattern[str],
    *,
    stage: str,
    total: int,
    progress: Progress,
) -> None:
    connect_to, environment = _libpq_environment(dsn)
    process = await asyncio.create_subprocess_exec(
        str(binary),
        f"--dbname={connect_to}",
        *arguments,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=environment,
    )
    assert process.stderr is not None
    done = 0
    said: list[str] = []
    progress(stage, 0, total)
    async for raw in process.stderr:
        line = raw.decode(errors="replace").rstrip()
        if step.match(line):
            done += 1
            progress(stage, min(done, total), total)
        elif "error" in line or "warning" in line or "FATAL" in line or "DETAIL" in line:
            said = [*said, line][-_KEEP_LINES:]
    if await process.wait() != 0:
        detail = "\n".join(said) or "no message"
        raise DumpError(f"{binary.name} failed (exit {process.returncode}):\n{detail}")
    progress(stage, total, total)
