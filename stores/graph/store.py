"""The Neo4j store: one async driver, opened once, closed once."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import neo4j
from neo4j import AsyncDriver, AsyncGraphDatabase, AsyncSession
from neo4j.exceptions import ServiceUnavailable, SessionExpired

from stores._lifecycle import Lifecycle, StoreState
from stores._tls import describe_failure
from stores.errors import StoreUnavailable
from stores.graph.migrations import apply_migrations
from stores.graph.options import GraphOptions
from stores.graph.queries import GraphQueries
from stores.health import PoolUsage, ProbeResult, ms_since

NAME = "neo4j"

_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    ServiceUnavailable,
    SessionExpired,
    OSError,
    TimeoutError,
)


class GraphStore:
    """Owns the Neo4j driver; sessions are borrowed through `session()`, and the
    read queries hang off `queries`."""

    __slots__ = ("_driver", "_lifecycle", "_options", "_sessions_open", "queries")

    def __init__(self, options: GraphOptions) -> None:
        self._options = options
        self._driver: AsyncDriver | None = None
        self._sessions_open = 0
        self._lifecycle = Lifecycle(NAME)
        self.queries = GraphQueries(self)

    async def open(self) -> None:
        self._lifecycle.opening()
        # The driver connects lazily, so a Neo4j that is down does not stop the gateway.
        uri, tls = _with_tls(self._options)
        self._driver = AsyncGraphDatabase.driver(
            uri,
            auth=(self._options.user, self._options.password),
            max_connection_pool_size=self._options.max_pool_size,
            connection_acquisition_timeout=self._options.acquire_timeout,
            connection_timeout=self._options.connect_timeout,
            max_transaction_retry_time=self._options.max_retry_time,
            notifications_min_severity="OFF",
            **tls,
        )
        self._lifecycle.state = StoreState.OPENED

    async def aclose(self) -> None:
        driver, self._driver = self._driver, None
        self._lifecycle.state = StoreState.CLOSED
        if driver is not None:
            await driver.close()

    async def __aenter__(self) -> GraphStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def query_timeout(self) -> float:
        return self._options.query_timeout

    @property
    def slow_query_s(self) -> float:
        return self._options.slow_query_s

    def pool_usage(self) -> PoolUsage:
        """Sessions open (each holds one pooled connection while it works) against the
        pool's size, for metrics; the driver keeps its idle connections to itself."""
        limit = self._options.max_pool_size
        open_now = self._sessions_open
        return PoolUsage(
            in_use=min(open_now, limit), idle=0, waiting=max(0, open_now - limit), max=limit
        )

    @asynccontextmanager
    async def session(self, *, read: bool = False) -> AsyncIterator[AsyncSession]:
        """A session on the store's database; `read`: its auto-commit queries go where
        reads may (a cluster's readers)."""
        self._lifecycle.check_open()
        assert self._driver is not None
        self._sessions_open += 1
        mode = neo4j.READ_ACCESS if read else neo4j.WRITE_ACCESS
        try:
            async with self._driver.session(
                database=self._options.database, default_access_mode=mode
            ) as session:
                yield session
        except _UNAVAILABLE_ERRORS as exc:
            raise StoreUnavailable(NAME, describe_failure(exc)) from exc
        finally:
            self._sessions_open -= 1

    async def migrate(self) -> list[str]:
        async with self.session() as session:
            return await apply_migrations(session)

    async def probe(self) -> ProbeResult:
        started = time.perf_counter()
        try:
            async with self.session() as session:
                result = await session.run(
                    neo4j.Query(
                        "CALL dbms.components() YIELD name, versions, edition "
                        "RETURN versions[0] AS version, edition",
                        timeout=self._options.query_timeout,
                    )
                )
                record = await result.single(strict=True)
        except StoreUnavailable as exc:
            return ProbeResult(NAME, False, ms_since(started), error=exc.reason)
        except neo4j.exceptions.Neo4jError as exc:
            return ProbeResult(NAME, False, ms_since(started), error=exc.message or str(exc))
        return ProbeResult(
            NAME, True, ms_since(started), record["version"], {"edition": record["edition"]}
        )


def _with_tls(options: GraphOptions) -> tuple[str, dict[str, Any]]:
    """The URI and driver settings for `options`. The driver takes a custom CA only with
    a plain scheme and `encrypted=True`, so `bolt+s://` with a CA file becomes that."""
    if not options.tls_ca_file:
        return options.uri, {}
    scheme, _, rest = options.uri.partition("://")
    plain = scheme.removesuffix("+s")
    return f"{plain}://{rest}", {
        "encrypted": True,
        "trusted_certificates": neo4j.TrustCustomCAs(options.tls_ca_file),
    }
