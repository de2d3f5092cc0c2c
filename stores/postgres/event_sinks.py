"""Event sinks: HTTP endpoints that receive task and agent events, and the queue of
deliveries the worker in `workers/event_sinks.py` sends them from.

Events are the audit log's rows: every task and agent write records one in its own
transaction, so nothing needs adding to the write path. Each sink keeps a cursor
over `audit_log (xid, id)` and reads only rows older than the oldest transaction
still running (`pg_snapshot_xmin`), so a row that commits after a later id was seen
is still ahead of the cursor when it appears. Matched rows are copied into
`event_deliveries`, one per sink and event, and each is tried on its own schedule:
one slow event does not hold the others up, and delivery order is not promised.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit
from uuid import UUID

from asyncpg import Record

from stores.errors import InvalidInput, NotFound
from stores.postgres.options import PgConnection
from stores.postgres.records import JSON, EventSink, WriteContext
from stores.postgres.writes import (
    claim_idempotency_key,
    settle_idempotency_key,
    write_audit,
    write_transaction,
)

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

_MAX_ERROR_LENGTH = 500
MAX_URL_LENGTH = 2048
MAX_DESCRIPTION_LENGTH = 500
MAX_PATTERNS = 20
# Each sink costs a statement per delivery round in every replica.
MAX_SINKS = 100
# The resources whose audit rows are events, and the form of a pattern: `task.*`,
# `agent.update`, `task.transition`... (resource type, a dot, an action or `*`).
EVENT_RESOURCES = ("task", "agent", "agent_relationship")
_PATTERN = re.compile(rf"({'|'.join(EVENT_RESOURCES)})\.(\*|[a-z][a-z_.]{{0,39}})")
_LOCAL_NAMES = ("localhost", "localhost.localdomain")

_SINK_COLUMNS = (
    "s.id, s.url, s.events, s.description, s.paused, s.delivered, s.retried, s.dropped,"
    " s.last_delivered_at, s.last_error, s.last_error_at, s.created_by, s.created_at,"
    " (SELECT count(*) FROM event_deliveries d WHERE d.sink_id = s.id) AS pending"
)


@dataclass(frozen=True, slots=True)
class Delivery:
    """One event on its way to one sink; `attempts` counts this one."""

    sink_id: UUID
    url: str
    secret: str
    event_id: int
    attempts: int
    # None when the audit row is gone: there is nothing left to send.
    event: JSON | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended. `retry_in_s` None: delivered, or dropped if `error` is set."""

    sink_id: UUID
    event_id: int
    error: str | None = None
    retry_in_s: float | None = None


def check_url(url: str, *, allow_loopback: bool) -> str:
    """The URL a sink may have: http or https, a host, no credentials, bounded length;
    a loopback or link-local host only when `allow_loopback` (names are checked again,
    resolved, before each delivery)."""
    if not 10 <= len(url) <= MAX_URL_LENGTH or any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidInput(
            "url",
            f"must be an http(s) URL of 10 to {MAX_URL_LENGTH} characters, without spaces"
            " or control characters",
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a port out of range)
    except ValueError as exc:
        raise InvalidInput("url", f"is not a valid URL: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInput("url", "must start with http:// or https:// and name a host")
    if parts.username is not None or parts.password is not None:
        raise InvalidInput(
            "url", "must not hold credentials: deliveries are signed, verify the signature"
        )
    if parts.fragment:
        raise InvalidInput("url", "must not have a #fragment")
    host = parts.hostname.lower().rstrip(".")
    if not allow_loopback:
        if host in _LOCAL_NAMES or host.endswith(".localhost"):
            raise InvalidInput("url", f"{refused_reason('127.0.0.1')} ({host})")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            pass
        else:
            reason = refused_reason(str(address))
            if reason is not None:
                raise InvalidInput("url", reason)
    return url


def refused_reason(address: str) -> str | None:
    """Why deliveries may not go to `address` unless loopback is allowed, or None.
    Loopback reaches the gateway's own host; link-local holds cloud metadata services."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_link_local or ip.is_unspecified or ip.is_multicast:
        return (
            f"points at a loopback, link-local, unspecified or multicast address ({ip});"
            " set POLYGRAPH_EVENT_SINKS_ALLOW_LOOPBACK=true to allow it"
        )
    return None


def check_patterns(events: Sequence[str]) -> tuple[str, ...]:
    """Distinct, well-formed event patterns, in the order given."""
    patterns = tuple(dict.fromkeys(events))
    if not 1 <= len(patterns) <= MAX_PATTERNS:
        raise InvalidInput("events", f"must list 1 to {MAX_PATTERNS} event patterns")
    for pattern in patterns:
        if not _PATTERN.fullmatch(pattern):
            kinds = ", ".join(f"{resource}.*" for resource in EVENT_RESOURCES)
            raise InvalidInput(
                "events",
                f"{pattern[:60]!r} is not an event pattern: use {kinds} or one action,"
                " such as task.transition or agent.update",
            )
    return patterns


class EventSinkRepository:
    """Reached as `PostgresStore.event_sinks`."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def create(
        self,
        ctx: WriteContext,
        *,
        url: str,
        events: Sequence[str],
        description: str,
        secret: str,
        allow_loopback: bool = False,
    ) -> tuple[EventSink, str]:
        """A new sink that receives events committed from now on, and its secret: `secret`,
        or the first call's when `ctx.idempotency_key` replays it. Audited (without the
        secret)."""
        url = check_url(url, allow_loopback=allow_loopback)
        events = check_patterns(events)
        if len(description) > MAX_DESCRIPTION_LENGTH:
            raise InvalidInput(
                "description", f"must be at most {MAX_DESCRIPTION_LENGTH} characters"
            )
        async with write_transaction(self._store) as conn:
            replay = await claim_idempotency_key(conn, ctx, f"event_sink.create {url}", {})
            if replay is not None:
                return await _created_before(conn, UUID(replay["id"]))
            # Concurrent creations may pass this together; the cap is a bound, not a count.
            if await conn.fetchval("SELECT count(*) FROM event_sinks") >= MAX_SINKS:
                raise InvalidInput(
                    "url", f"there are {MAX_SINKS} event sinks already; delete one first"
                )
            row = await conn.fetchrow(
                "WITH s AS (INSERT INTO event_sinks"
                " (url, events, description, secret, created_by, cursor_xid)"
                " VALUES ($1, $2, $3, $4, $5, pg_snapshot_xmin(pg_current_snapshot()))"
                " RETURNING *)"
                f" SELECT {_SINK_COLUMNS} FROM s",
                url,
                list(events),
                description,
                secret,
                ctx.actor_id,
            )
            assert row is not None
            sink = _sink(row)
            new = {"url": url, "events": list(events), "description": description}
            await write_audit(conn, ctx, "create", "event_sink", sink.id, None, new)
            await settle_idempotency_key(conn, ctx, {"id": str(sink.id)})
        return sink, secret

    async def list_sinks(self) -> list[EventSink]:
        """Every sink, oldest first (there are few: creation is capped)."""
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_SINK_COLUMNS} FROM event_sinks s ORDER BY s.created_at, s.id"
            )
        return [_sink(row) for row in rows]

    async def delete(self, ctx: WriteContext, sink_id: UUID) -> bool:
        """Remove a sink and its undelivered events; False if there was none. Audited.

        The sink's row is locked first, then its deliveries (the cascade), the order
        `settle` takes them in too: the two never wait on each other in a cycle."""
        async with write_transaction(self._store) as conn:
            operation = f"event_sink.delete {sink_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"deleted": False})
            if replay is not None:
                return bool(replay["deleted"])
            row = await conn.fetchrow(
                "DELETE FROM event_sinks WHERE id = $1 RETURNING url, events, description",
                sink_id,
            )
            if row is None:
                return False
            old = {"url": row["url"], "events": row["events"], "description": row["description"]}
            await write_audit(conn, ctx, "delete", "event_sink", sink_id, old, None)
            await settle_idempotency_key(conn, ctx, {"deleted": True})
        return True

    async def set_paused(self, ctx: WriteContext, sink_id: UUID, paused: bool) -> EventSink:
        """Pause or resume a sink. A paused sink's cursor stands still, so on resume it
        receives what happened meanwhile. Audited."""
        async with write_transaction(self._store) as conn:
            operation = f"event_sink.pause {sink_id} {paused}"
            if await claim_idempotency_key(conn, ctx, operation, {}) is not None:
                row = await conn.fetchrow(
                    f"SELECT {_SINK_COLUMNS} FROM event_sinks s WHERE s.id = $1", sink_id
                )
                if row is None:
                    raise NotFound("event sink", sink_id, field="id")
                return _sink(row)
            row = await conn.fetchrow(
                "WITH s AS (UPDATE event_sinks SET paused = $2 WHERE id = $1 RETURNING *)"
                f" SELECT {_SINK_COLUMNS} FROM s",
                sink_id,
                paused,
            )
            if row is None:
                raise NotFound("event sink", sink_id, field="id")
            await write_audit(
                conn, ctx, "pause" if paused else "resume", "event_sink", sink_id, None, None
            )
        return _sink(row)

    async def rebase_after_restore(self) -> int:
        """Transaction ids belong to a server: rows restored from a dump of another one
        may carry ids this server has not reached yet, and would be sent again once it
        reaches them. Move such rows below every cursor (they are the dump's past), and
        cursors ahead of this server to now; returns how many rows moved."""
        async with self._store.connection() as conn, conn.transaction():
            moved = await conn.execute(
                "UPDATE audit_log SET xid = '0'::xid8"
                " WHERE xid >= pg_snapshot_xmin(pg_current_snapshot())"
            )
            await conn.execute(
                "UPDATE event_sinks SET cursor_xid = pg_snapshot_xmin(pg_current_snapshot()),"
                " cursor_id = 0 WHERE cursor_xid > pg_snapshot_xmin(pg_current_snapshot())"
            )
        return int(moved.rsplit(" ", 1)[-1])

    async def fan_out(self, limit: int) -> int:
        """Queue, for every active sink no other process is queueing for, up to `limit`
        matching events past its cursor; returns how many sinks it queued for."""
        async with self._store.connection() as conn, conn.transaction():
            sinks = await conn.fetch(
                "SELECT id FROM event_sinks WHERE NOT paused ORDER BY id FOR UPDATE SKIP LOCKED"
            )
            for sink in sinks:
                await conn.execute(_FAN_OUT, sink["id"], limit)
        return len(sinks)

    async def claim_due(
        self, limit: int, lease_s: float, *, skip_sinks: Sequence[UUID] = ()
    ) -> list[Delivery]:
        """Take up to `limit` deliveries whose time has come, but none for `skip_sinks`,
        counting an attempt for each and hiding them from other claimers for `lease_s`
        (the attempt's longest run)."""
        async with self._store.connection() as conn, conn.transaction():
            rows = await conn.fetch(_CLAIM, limit, lease_s, list(skip_sinks))
        return [
            Delivery(
                sink_id=row["sink_id"],
                url=row["url"],
                secret=row["secret"],
                event_id=row["event_id"],
                attempts=row["attempts"],
                event=_event(row) if row["resource_type"] is not None else None,
            )
            for row in rows
        ]

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give back claimed deliveries that were not attempted: due again, their attempt
        uncounted."""
        if not deliveries:
            return
        async with self._store.connection() as conn:
            await conn.execute(
                "UPDATE event_deliveries d"
                " SET attempts = d.attempts - 1, next_attempt_at = now()"
                " FROM unnest($1::uuid[], $2::bigint[]) AS o(sink_id, event_id)"
                " WHERE d.sink_id = o.sink_id AND d.event_id = o.event_id",
                [d.sink_id for d in deliveries],
                [d.event_id for d in deliveries],
            )

    async def settle(self, outcomes: Sequence[Outcome]) -> None:
        """Record how attempts ended: delivered and dropped events leave the queue,
        failed ones wait for their retry; each sink's counts and last error follow."""
        if not outcomes:
            return
        done = [o for o in outcomes if o.retry_in_s is None]
        again = [o for o in outcomes if o.retry_in_s is not None]
        async with self._store.connection() as conn, conn.transaction():
            # Sinks before their deliveries, in id order, as a sink's delete takes them
            # (its row, then the cascade): otherwise each can hold what the other waits for.
            await conn.execute(
                "SELECT 1 FROM event_sinks WHERE id = ANY ($1::uuid[]) ORDER BY id"
                " FOR NO KEY UPDATE",
                list({o.sink_id for o in outcomes}),
            )
            if done:
                await conn.execute(
                    "DELETE FROM event_deliveries d USING unnest($1::uuid[], $2::bigint[])"
                    " AS o(sink_id, event_id)"
                    " WHERE d.sink_id = o.sink_id AND d.event_id = o.event_id",
                    [o.sink_id for o in done],
                    [o.event_id for o in done],
                )
            if again:
                await conn.execute(
                    "UPDATE event_deliveries d"
                    " SET next_attempt_at = now() + o.delay * interval '1 second'"
                    " FROM unnest($1::uuid[], $2::bigint[], $3::float8[])"
                    " AS o(sink_id, event_id, delay)"
                    " WHERE d.sink_id = o.sink_id AND d.event_id = o.event_id",
                    [o.sink_id for o in again],
                    [o.event_id for o in again],
                    [o.retry_in_s for o in again],
                )
            await conn.execute(
                _COUNT,
                [o.sink_id for o in outcomes],
                [o.error is None for o in outcomes],
                [o.error is not None and o.retry_in_s is not None for o in outcomes],
                [o.error is not None and o.retry_in_s is None for o in outcomes],
                [None if o.error is None else o.error[:_MAX_ERROR_LENGTH] for o in outcomes],
            )


async def _created_before(conn: PgConnection, sink_id: UUID) -> tuple[EventSink, str]:
    row = await conn.fetchrow(
        f"SELECT {_SINK_COLUMNS}, s.secret FROM event_sinks s WHERE s.id = $1", sink_id
    )
    if row is None:
        raise NotFound("event sink", sink_id, field="idempotencyKey")
    return _sink(row), row["secret"]


# Rows of the sink's patterns past its cursor and below the horizon, queued; the cursor
# moves to the last row queued, or to the horizon when fewer than `limit` matched (every
# row below it has been looked at). A cursor past the horizon (a database restored from
# a dump starts counting transactions afresh) restarts from the horizon.
_FAN_OUT = """
WITH sink AS (
    SELECT id, events, least(cursor_xid, pg_snapshot_xmin(pg_current_snapshot())) AS after_xid,
           CASE WHEN cursor_xid > pg_snapshot_xmin(pg_current_snapshot()) THEN 0
                ELSE cursor_id END AS after_id,
           pg_snapshot_xmin(pg_current_snapshot()) AS horizon
    FROM event_sinks WHERE id = $1
),
matched AS (
    SELECT a.xid, a.id FROM audit_log a, sink
    WHERE (a.xid, a.id) > (sink.after_xid, sink.after_id) AND a.xid < sink.horizon
      AND (a.resource_type || '.' || a.action = ANY (sink.events)
           OR a.resource_type || '.*' = ANY (sink.events))
    ORDER BY a.xid, a.id
    LIMIT $2
),
queued AS (
    INSERT INTO event_deliveries (sink_id, event_id)
    SELECT $1, id FROM matched
    ON CONFLICT DO NOTHING
),
last_row AS (SELECT xid, id FROM matched ORDER BY xid DESC, id DESC LIMIT 1),
full_batch AS (SELECT count(*) = $2 AS is_full FROM matched)
UPDATE event_sinks s
SET cursor_xid = CASE WHEN full_batch.is_full THEN (SELECT xid FROM last_row) ELSE sink.horizon END,
    cursor_id = CASE WHEN full_batch.is_full THEN (SELECT id FROM last_row) ELSE 0 END
FROM sink, full_batch
WHERE s.id = sink.id
"""

_CLAIM = """
WITH due AS (
    SELECT d.sink_id, d.event_id
    FROM event_deliveries d JOIN event_sinks s ON s.id = d.sink_id
    WHERE d.next_attempt_at <= now() AND NOT s.paused AND NOT (d.sink_id = ANY ($3::uuid[]))
    ORDER BY d.next_attempt_at, d.event_id
    LIMIT $1
    FOR UPDATE OF d SKIP LOCKED
),
claimed AS (
    UPDATE event_deliveries d
    SET attempts = d.attempts + 1, next_attempt_at = now() + $2 * interval '1 second'
    FROM due WHERE d.sink_id = due.sink_id AND d.event_id = due.event_id
    RETURNING d.sink_id, d.event_id, d.attempts
)
SELECT c.sink_id, c.event_id, c.attempts, s.url, s.secret,
       a.action, a.resource_type, a.resource_id, a.actor_id, a.request_id,
       a.old_value, a.new_value, a.created_at
FROM claimed c
JOIN event_sinks s ON s.id = c.sink_id
LEFT JOIN audit_log a ON a.id = c.event_id
"""

_COUNT = """
UPDATE event_sinks s
SET delivered = s.delivered + o.delivered,
    retried = s.retried + o.retried,
    dropped = s.dropped + o.dropped,
    last_delivered_at = CASE WHEN o.delivered > 0 THEN now() ELSE s.last_delivered_at END,
    last_error = coalesce(o.last_error, s.last_error),
    last_error_at = CASE WHEN o.last_error IS NULL THEN s.last_error_at ELSE now() END
FROM (
    SELECT sink_id,
           count(*) FILTER (WHERE ok) AS delivered,
           count(*) FILTER (WHERE retry) AS retried,
           count(*) FILTER (WHERE gave_up) AS dropped,
           (array_agg(error) FILTER (WHERE error IS NOT NULL))[1] AS last_error
    FROM unnest($1::uuid[], $2::bool[], $3::bool[], $4::bool[], $5::text[])
         AS o(sink_id, ok, retry, gave_up, error)
    GROUP BY sink_id
) o
WHERE s.id = o.sink_id
"""


def _sink(row: Record) -> EventSink:
    return EventSink(
        id=row["id"],
        url=row["url"],
        events=tuple(row["events"]),
        description=row["description"],
        paused=row["paused"],
        delivered=row["delivered"],
        retried=row["retried"],
        dropped=row["dropped"],
        pending=row["pending"],
        last_delivered_at=row["last_delivered_at"],
        last_error=row["last_error"],
        last_error_at=row["last_error_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
    )


def _event(row: Record) -> JSON:
    """What a sink receives: the audit row, with a stable id to deduplicate by."""
    return {
        "id": str(row["event_id"]),
        "type": f"{row['resource_type']}.{row['action']}",
        "occurredAt": row["created_at"].isoformat(),
        "resource": {"type": row["resource_type"], "id": row["resource_id"]},
        "actorId": None if row["actor_id"] is None else str(row["actor_id"]),
        "requestId": row["request_id"],
        "data": {"old": row["old_value"], "new": row["new_value"]},
    }
