"""The PostgreSQL store: one asyncpg pool to the primary (and one per read replica),
opened once, closed once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from functools import partial
from types import TracebackType

import asyncpg
import orjson

from stores import roundtrips, slow
from stores._pg_pool import UNAVAILABLE_ERRORS, ObservedConnection, PgPool
from stores._tls import describe_failure
from stores.errors import StoreError, StoreUnavailable
from stores.health import PoolUsage, ProbeResult, ms_since
from stores.postgres.achievements import AchievementRepository
from stores.postgres.advisory import exclusive_job
from stores.postgres.agent_grants import AgentGrantRepository
from stores.postgres.agents import AgentRepository
from stores.postgres.audit import AuditRepository
from stores.postgres.conversations import ConversationRepository
from stores.postgres.documents import TrustedDocumentRepository
from stores.postgres.event_sinks import EventSinkRepository
from stores.postgres.migrations import (
    MigrationError,
    SchemaOutdated,
    apply_migrations,
    pending_migrations,
)
from stores.postgres.options import PgConnection, PostgresOptions
from stores.postgres.replicas import (
    PRIMARY_POSITION,
    WRITE_POSITION,
    Replica,
    ReplicaSet,
    current_scope,
    replica_or_primary,
)
from stores.postgres.task_claims import TaskClaims
from stores.postgres.tasks import TaskRepository
from stores.postgres.users import UserRepository
from stores.postgres.vectors import register_vector_codec
from stores.postgres.workflows import WorkflowRepository

logger = logging.getLogger(__name__)

NAME = "postgres"
REPLICA_NAME = "postgres-replica"


class PostgresStore:
    """Owns the asyncpg pool; everything else borrows connections through `connection()`."""

    __slots__ = (
        "_options",
        "_pool",
        "_replicas",
        "_schema_check",
        "_schema_checking",
        "_schema_failure",
        "_vector_codec_missing",
        "achievements",
        "agent_grants",
        "agents",
        "audit",
        "claims",
        "conversations",
        "documents",
        "event_sinks",
        "tasks",
        "users",
        "workflows",
    )

    def __init__(self, options: PostgresOptions) -> None:
        self._options = options
        self._vector_codec_missing = False
        self._pool = self._new_pool(NAME, options.dsn)
        self._replicas: ReplicaSet | None = None
        if options.replica_dsns:
            several = len(options.replica_dsns) > 1
            replicas = [
                Replica(name, self._new_pool(name, dsn))
                for index, dsn in enumerate(options.replica_dsns, start=1)
                for name in [f"{REPLICA_NAME}-{index}" if several else REPLICA_NAME]
            ]
            self._replicas = ReplicaSet(
                replicas,
                self._written_position,
                max_lag_s=options.replica_max_lag_s,
                check_interval_s=options.replica_check_interval_s,
            )
        self.users = UserRepository(self)
        self.agents = AgentRepository(self)
        self.tasks = TaskRepository(self)
        self.claims = TaskClaims(self)
        self.workflows = WorkflowRepository(self)
        self.achievements = AchievementRepository(self)
        self.audit = AuditRepository(self)
        self.documents = TrustedDocumentRepository(self)
        # Set while the schema is unverified: connections wait for this check first.
        self._schema_check: Callable[[], Awaitable[object]] | None = None
        self._schema_checking: asyncio.Task[None] | None = None
        self._schema_failure: str | None = None
        self.agent_grants = AgentGrantRepository(self)
        self.event_sinks = EventSinkRepository(self)
        self.conversations = ConversationRepository(self)

    def _new_pool(self, name: str, dsn: str) -> PgPool:
        return PgPool(
            name,
            partial(self._connect, dsn),
            partial(self._init_connection, name=name),
            min_size=self._options.min_size,
            max_size=self._options.max_size,
            acquire_timeout=self._options.acquire_timeout,
            close_timeout=self._options.close_timeout,
        )

    async def open(self) -> None:
        await self._pool.open()
        if self._replicas is not None:
            await self._replicas.open()

    async def aclose(self) -> None:
        if self._schema_checking is not None:
            self._schema_checking.cancel()
            with contextlib.suppress(asyncio.CancelledError, StoreError):
                await self._schema_checking
        if self._replicas is not None:
            await self._replicas.aclose()
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

    def pool_usage(self) -> PoolUsage:
        """The pool's connections in use, idle and waited for (for metrics)."""
        return self._pool.usage()

    def replica_pool_usage(self) -> list[tuple[str, PoolUsage]]:
        """Each read replica's name and pool usage (for metrics)."""
        return self._replicas.usage() if self._replicas is not None else []

    @property
    def replicas(self) -> ReplicaSet | None:
        """The read replicas, when any are configured."""
        return self._replicas

    def replica_probes(self) -> list[ProbeResult]:
        """Each read replica as its last background check found it (for health)."""
        return self._replicas.probes() if self._replicas is not None else []

    def read_connection(self) -> AbstractAsyncContextManager[PgConnection]:
        """A connection for a read that tolerates lag: a replica's inside a
        `replica_reads` scope (stores/postgres/replicas.py) when one has replayed the
        reader's own last write, the primary's otherwise."""
        scope = current_scope()
        if self._replicas is None or scope is None or self._schema_check is not None:
            return self.connection()
        return replica_or_primary(self._replicas, scope, self.connection)

    async def wal_position(self) -> int:
        """The primary's WAL position after every write committed so far (bytes)."""
        async with self.connection() as conn:
            position = await conn.fetchval(WRITE_POSITION)
        return int(position)

    async def _written_position(self) -> int:
        async with self.connection() as conn:
            position = await conn.fetchval(PRIMARY_POSITION)
        return int(position)

    def connection(self) -> AbstractAsyncContextManager[PgConnection]:
        """A pooled connection; an unreachable server surfaces as `StoreUnavailable`,
        and so does a schema not yet checked (see `defer_schema_check`)."""
        if self._schema_check is None:
            return self._pool.connection()
        return self._checked_connection()

    async def notify(self, channel: str, payload: str) -> None:
        """NOTIFY `channel` on a pooled connection (its own transaction)."""
        async with self.connection() as conn:
            await conn.execute("SELECT pg_notify($1, $2)", channel, payload)

    async def migrate(self) -> list[str]:
        """Apply pending migrations; returns the versions applied by this call.

        Runs on a connection of its own, without a statement timeout; waiting longer
        than `migration_lock_timeout` for a lock raises `MigrationLockTimeout`."""
        async with self._own_connection("polygraph-migrate") as conn:
            applied = await apply_migrations(
                conn, lock_timeout=self._options.migration_lock_timeout
            )
        if self._vector_codec_missing:
            # Connections opened before the `vector` extension existed (a fresh database,
            # or another replica migrating it) get its codec when replaced.
            self._vector_codec_missing = False
            await self._pool.expire_connections()
            for replica in self._replicas.replicas if self._replicas is not None else []:
                await replica.pool.expire_connections()
        return applied

    @asynccontextmanager
    async def exclusive_job(self, job: str) -> AsyncIterator[None]:
        """Run the block as the only `job` on this database, whichever process asks
        (stores/postgres/advisory.py); raises `JobAlreadyRunning` naming the holder."""
        async with self._own_connection(f"polygraph {job}") as conn, exclusive_job(conn, job):
            yield

    async def check_schema(self) -> None:
        """Raise `SchemaOutdated` unless every migration of this code is applied."""
        async with self._own_connection("polygraph-schema-check") as conn:
            pending = await pending_migrations(conn)
        if pending:
            raise SchemaOutdated([m.version for m in pending])

    def defer_schema_check(self, check: Callable[[], Awaitable[object]]) -> None:
        """For a server that was down at start: until `check` (`migrate` or
        `check_schema`) succeeds, every connection runs it first, and fails with
        `StoreUnavailable` while it fails, so nothing is served from a schema older
        than this code. Concurrent callers share one run of the check."""
        self._schema_check = check

    @asynccontextmanager
    async def _checked_connection(self) -> AsyncIterator[PgConnection]:
        running = self._schema_checking
        if running is None or running.done():
            running = self._schema_checking = asyncio.create_task(
                self._run_schema_check(), name="polygraph-schema-check"
            )
            # Its outcome reaches whoever waits; this keeps a failure nobody waited
            # for (every caller cancelled) out of asyncio's "never retrieved" log.
            running.add_done_callback(lambda task: task.cancelled() or task.exception())
        await asyncio.shield(running)
        async with self._pool.connection() as conn:
            yield conn

    async def _run_schema_check(self) -> None:
        check = self._schema_check
        if check is None:
            return
        try:
            await check()
        except StoreUnavailable as exc:
            raise StoreUnavailable(NAME, f"its schema is not checked yet: {exc.reason}") from exc
        except MigrationError as exc:
            if str(exc) != self._schema_failure:
                logger.error("PostgreSQL is not served until its schema is ready: %s", exc)
                self._schema_failure = str(exc)
            raise StoreUnavailable(NAME, f"its schema is not ready: {exc}") from exc
        self._schema_check = None
        logger.info("PostgreSQL schema checked; serving it")

    @asynccontextmanager
    async def _own_connection(self, application_name: str) -> AsyncIterator[asyncpg.Connection]:
        """A connection outside the pool, for work that changes session settings."""
        self._pool.check_open()
        try:
            conn = await asyncpg.connect(
                self._options.dsn,
                timeout=self._options.acquire_timeout,
                server_settings={"application_name": application_name},
            )
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(NAME, describe_failure(exc)) from exc
        try:
            yield conn
        except UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(NAME, describe_failure(exc)) from exc
        finally:
            try:
                await asyncio.wait_for(conn.close(), timeout=self._options.acquire_timeout)
            except Exception:
                # Closing politely failed; the server ends the session when the socket goes.
                conn.terminate()

    async def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with self.connection() as conn:
                row = await conn.fetchrow(
                    "SELECT current_setting('server_version') AS version,"
                    " (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector"
                )
        except StoreUnavailable as exc:
            return ProbeResult(NAME, False, ms_since(started), error=exc.reason)
        assert row is not None
        details = {"pgvector": row["pgvector"]} if row["pgvector"] else {}
        return ProbeResult(NAME, True, ms_since(started), row["version"], details)

    async def _connect(self, dsn: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            dsn,
            connection_class=ObservedConnection,
            timeout=self._options.acquire_timeout,
            command_timeout=self._options.statement_timeout,
            server_settings={
                "application_name": "polygraph",
                "statement_timeout": str(int(self._options.statement_timeout * 1000)),
            },
        )

    async def _init_connection(self, conn: asyncpg.Connection, *, name: str) -> None:
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
        if not await register_vector_codec(conn, self._options.vector_format):
            self._vector_codec_missing = True
        # Every statement a request sends counts as one round trip (see stores.roundtrips),
        # under the name of the server that answered it.
        assert isinstance(conn, ObservedConnection)
        conn.observer = partial(
            self._observe_statement, name=REPLICA_NAME if name != NAME else NAME
        )

    def _observe_statement(self, query: str, seconds: float, *, name: str) -> None:
        roundtrips.record(name, seconds=seconds)
        slow.observe(NAME, seconds, query, threshold_s=self._options.slow_statement_s)


def _encode_json(value: object) -> str:
    return orjson.dumps(value).decode()


_JSONB_VERSION = b"\x01"


def _encode_jsonb(value: object) -> bytes:
    return _JSONB_VERSION + orjson.dumps(value)


def _decode_jsonb(data: bytes) -> object:
    return orjson.loads(data[1:])
