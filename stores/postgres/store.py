"""The PostgreSQL store: one asyncpg pool, opened once, closed once."""

from __future__ import annotations

import logging
import time
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import asyncpg
import orjson
from asyncpg.connection import LoggedQuery

from stores import roundtrips
from stores._pg_pool import PgPool
from stores.errors import StoreUnavailable
from stores.health import ProbeResult
from stores.postgres.achievements import AchievementRepository
from stores.postgres.agents import AgentRepository
from stores.postgres.audit import AuditRepository
from stores.postgres.documents import TrustedDocumentRepository
from stores.postgres.migrations import apply_migrations
from stores.postgres.options import PgConnection, PostgresOptions
from stores.postgres.tasks import TaskRepository
from stores.postgres.users import UserRepository
from stores.postgres.workflows import WorkflowRepository

logger = logging.getLogger(__name__)

NAME = "postgres"


class PostgresStore:
    """Owns the asyncpg pool; everything else borrows connections through `connection()`."""

    __slots__ = (
        "_options",
        "_pool",
        "achievements",
        "agents",
        "audit",
        "documents",
        "tasks",
        "users",
        "workflows",
    )

    def __init__(self, options: PostgresOptions) -> None:
        self._options = options
        self._pool = PgPool(
            NAME,
            self._create_pool,
            min_size=options.min_size,
            acquire_timeout=options.acquire_timeout,
            close_timeout=options.close_timeout,
        )
        self.users = UserRepository(self)
        self.agents = AgentRepository(self)
        self.tasks = TaskRepository(self)
        self.workflows = WorkflowRepository(self)
        self.achievements = AchievementRepository(self)
        self.audit = AuditRepository(self)
        self.documents = TrustedDocumentRepository(self)

    async def open(self) -> None:
        await self._pool.open()

    async def aclose(self) -> None:
        await self._pool.aclose()

    async def __aenter__(self) -> PostgresStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def connection(self) -> AbstractAsyncContextManager[PgConnection]:
        """A pooled connection; an unreachable server surfaces as `StoreUnavailable`."""
        return self._pool.connection()

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the versions applied by this call."""
        async with self.connection() as conn:
            return await apply_migrations(conn)

    async def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with self.connection() as conn:
                row = await conn.fetchrow(
                    "SELECT current_setting('server_version') AS version,"
                    " (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector"
                )
        except StoreUnavailable as exc:
            return ProbeResult(NAME, False, _ms_since(started), error=exc.reason)
        assert row is not None
        details = {"pgvector": row["pgvector"]} if row["pgvector"] else {}
        return ProbeResult(NAME, True, _ms_since(started), row["version"], details)

    async def _create_pool(self, min_size: int) -> asyncpg.Pool:
        pool = await asyncpg.create_pool(
            self._options.dsn,
            init=_init_connection,
            reset=_keep_session,
            min_size=min_size,
            max_size=self._options.max_size,
            timeout=self._options.acquire_timeout,
            command_timeout=self._options.statement_timeout,
            server_settings={
                "application_name": "polygraph",
                "statement_timeout": str(int(self._options.statement_timeout * 1000)),
            },
        )
        assert pool is not None
        return pool


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec(
        "json", encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog"
    )
    # Binary jsonb (a version byte, then the text) also serves COPY, which is binary only.
    await conn.set_type_codec(
        "jsonb",
        encoder=_encode_jsonb,
        decoder=_decode_jsonb,
        schema="pg_catalog",
        format="binary",
    )
    # Every statement a request sends counts as one round trip (see stores.roundtrips).
    conn.add_query_logger(_count_round_trip)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Replaces the pool's `RESET ALL; UNLISTEN *; ...` on every release (a round trip
    that costs about 30% of throughput on small queries). Safe here because nothing
    leaves session state behind on a pooled connection: settings are fixed at connect,
    advisory locks are released explicitly, LISTEN uses a dedicated connection, and
    asyncpg still rolls back a transaction left open."""


def _encode_json(value: object) -> str:
    return orjson.dumps(value).decode()


_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: object) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> object:
    return orjson.loads(data[1:])


# asyncpg looks up unfamiliar types once per connection with these statements: that is
# connection warm-up, not work the request asked for, so it is not counted.
_INTROSPECTION_MARKERS = ("typeinfo_tree", "current_setting('jit')", "set_config('jit'")


def _count_round_trip(logged: LoggedQuery) -> None:
    if not any(marker in logged.query for marker in _INTROSPECTION_MARKERS):
        roundtrips.record(NAME)


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
