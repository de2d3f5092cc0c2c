"""LISTEN on a PostgreSQL channel from a dedicated connection.

A pooled connection would be reset on release and lose the subscription, so each
listener opens its own. Notifications arrive only for committed transactions, in
commit order, which is what makes them fit for invalidation and wake-ups alike.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Self

import asyncpg

from stores.errors import StoreUnavailable

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore


class ChannelListener:
    """Calls `on_notify(payload)` for each NOTIFY on `channel`.

    `connected` turns False when the server drops the connection, and `on_lost()` is
    called (what was notified meanwhile is not heard); `connect()` again.
    """

    __slots__ = (
        "_channel",
        "_closed",
        "_conn",
        "_dsn",
        "_name",
        "_on_lost",
        "_on_notify",
        "_timeout",
    )

    def __init__(
        self,
        store: PostgresStore,
        channel: str,
        on_notify: Callable[[str], None],
        *,
        application_name: str,
        on_lost: Callable[[], None] | None = None,
    ) -> None:
        # Package-internal: the listener needs the DSN but must not borrow from the pool.
        self._dsn = store._options.dsn
        self._timeout = store._options.acquire_timeout
        self._channel = channel
        self._on_notify = on_notify
        self._on_lost = on_lost
        self._name = application_name
        self._conn: asyncpg.Connection | None = None
        self._closed = asyncio.Event()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def connect(self) -> None:
        await self.aclose()
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=self._timeout,
                server_settings={"application_name": f"{self._name} (connecting)"},
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable("postgres", str(exc) or type(exc).__name__) from exc
        try:
            await conn.add_listener(self._channel, self._notified)
            # Named only once it listens: whoever counts it (`others_listening`) and then
            # notifies can count on it hearing.
            await conn.execute(
                "SELECT set_config('application_name', $1, false)",
                self._name,
                timeout=self._timeout,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            conn.terminate()
            raise StoreUnavailable("postgres", str(exc) or type(exc).__name__) from exc
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._closed.clear()
        conn.add_termination_listener(self._terminated)

    async def others_listening(self) -> int:
        """How many other connections to this database carry this listener's
        application name: the same listener in other processes, connected and
        listening now (a connection takes the name once it listens)."""
        conn = self._conn
        if conn is None or conn.is_closed():
            raise StoreUnavailable("postgres", "the listener is not connected")
        try:
            count = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND application_name = $1 AND pid <> pg_backend_pid()",
                self._name,
                timeout=self._timeout,
            )
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable("postgres", str(exc) or type(exc).__name__) from exc
        return int(count)

    async def wait_closed(self) -> None:
        """Return when the connection is gone: closed here or dropped by the server."""
        if self.connected:
            await self._closed.wait()

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        self._closed.set()
        if conn is None or conn.is_closed():
            return
        try:
            await asyncio.wait_for(conn.close(), timeout=self._timeout)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            conn.terminate()

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _terminated(self, conn: object) -> None:
        if conn is not self._conn:
            return  # closed here (`aclose`, a new `connect`): nothing was lost
        self._closed.set()
        if self._on_lost is not None:
            self._on_lost()

    def _notified(self, conn: object, pid: int, channel: str, payload: object) -> None:
        self._on_notify(str(payload))
