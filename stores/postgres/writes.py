"""What every write does inside its transaction: audit, idempotency, error translation.

A mutation's rows, its audit row, its outbox row and its idempotency key commit
or roll back together, so a failed write leaves no trace and a retried one
cannot write twice.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING
from uuid import UUID

import asyncpg
import orjson

from stores.errors import Conflict, InvalidInput, StoreRefused
from stores.postgres.options import PgConnection
from stores.postgres.outbox import OUTBOX_CHANNEL, wake_when_queued
from stores.postgres.records import JSON, WriteContext

if TYPE_CHECKING:
    from stores.postgres.pagination import Params
    from stores.postgres.store import PostgresStore

# Maps a constraint name to the error a client should see when it is violated.
Refusals = Mapping[str, Callable[[], StoreRefused]]

MAX_IDEMPOTENCY_KEY_LENGTH = 200


@asynccontextmanager
async def write_transaction(
    store: PostgresStore, refusals: Refusals | None = None
) -> AsyncIterator[PgConnection]:
    """A pooled connection inside a transaction; constraint violations named in
    `refusals` leave as store errors, after the rollback."""
    async with write_statement(store, refusals) as conn, conn.transaction():
        yield conn


@asynccontextmanager
async def write_statement(
    store: PostgresStore, refusals: Refusals | None = None
) -> AsyncIterator[PgConnection]:
    """A pooled connection for a write made in one statement, audit and outbox included
    (see `audit_in_statement`): PostgreSQL runs a statement in a transaction of its
    own, so BEGIN and COMMIT would be two round trips for nothing. Violations as in
    `write_transaction`."""
    async with store.connection() as conn:
        with translate_violations(refusals or {}):
            yield conn


@contextmanager
def translate_violations(refusals: Refusals) -> Iterator[None]:
    """Constraint violations named in `refusals` become store errors (values
    PostgreSQL cannot hold become `InvalidInput` on every pooled connection:
    stores/_pg_pool.py)."""
    try:
        yield
    except asyncpg.IntegrityConstraintViolationError as exc:
        make = refusals.get(exc.constraint_name or "")
        if make is None:
            raise
        raise make() from exc


_AUDIT = (
    "INSERT INTO audit_log (actor_id, action, resource_type, resource_id, old_value,"
    " new_value, request_id, client_address)"
    " VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, $8::inet)"
)
_AUDIT_AND_OUTBOX = (
    f"WITH audited AS ({_AUDIT}),"
    " queued AS (INSERT INTO outbox (kind, payload) VALUES ($9, $10::jsonb) RETURNING id)"
    " SELECT id FROM queued, pg_notify($11, '') AS notified"
)


async def write_audit(
    conn: PgConnection,
    ctx: WriteContext,
    action: str,
    resource_type: str,
    resource_id: object,
    old: object | None,
    new: object | None,
    *,
    outbox: tuple[str, JSON] | None = None,
) -> None:
    """Record a change. `old` and `new` are records or JSON objects (None when absent).

    With `outbox` (kind, payload), the same statement also queues that outbox message
    and wakes the projectors (as `outbox.enqueue` does): one round trip for both. The
    message's id is appended to `ctx.outbox_ids`.
    """
    params = (
        ctx.actor_id,
        action,
        resource_type,
        None if resource_id is None else str(resource_id),
        None if old is None else to_json(old),
        None if new is None else to_json(new),
        ctx.request_id,
        _ip_or_none(ctx.client_address),
    )
    ctx.audited.append(resource_type)
    if outbox is None:
        await conn.execute(_AUDIT, *params)
    else:
        kind, payload = outbox
        outbox_id: int = await conn.fetchval(
            _AUDIT_AND_OUTBOX, *params, kind, payload, OUTBOX_CHANNEL
        )
        ctx.outbox_ids.append(outbox_id)


def audit_in_statement(
    params: Params,
    ctx: WriteContext,
    action: str,
    resource_type: str,
    *,
    written: str,
    new_value: str,
    outbox: tuple[str, str],
    old: object | None = None,
    old_value: str | None = None,
) -> tuple[str, str]:
    """What `write_audit` does with `outbox`, inside the statement that writes: for the
    row of the CTE `written` (one row, with an `id`), its audit row and outbox message.

    `new_value` and the outbox payload (`outbox` is its kind and its SQL) are jsonb
    expressions over `written`'s row, rendered as `to_json` renders the record in
    Python; `old` is the record before the write (None for a new one), rendered in
    Python, or `old_value` in its place, a jsonb expression, when the statement itself
    reads the row before. Returns the CTEs to follow the write's own, and what the
    statement's final FROM lists beside `written` (the message's id is `queued.id`; the
    projectors are woken as `outbox.enqueue` wakes them, only if a row was written).
    When the statement has written, the caller appends `resource_type` to
    `ctx.audited` and the message's id to `ctx.outbox_ids`.
    """
    kind, payload = outbox
    if old_value is None:
        old_value = f"{params(None if old is None else to_json(old))}::jsonb"
    ctes = (
        "audited AS (INSERT INTO audit_log (actor_id, action, resource_type, resource_id,"
        " old_value, new_value, request_id, client_address)"
        f" SELECT {params(ctx.actor_id)}::uuid, {params(action)}::text,"
        f" {params(resource_type)}::text, {written}.id::text,"
        f" {old_value}, {new_value},"
        f" {params(ctx.request_id)}::text,"
        f" {params(_ip_or_none(ctx.client_address))}::inet FROM {written}),"
        f" queued AS (INSERT INTO outbox (kind, payload) SELECT {params(kind)}::text, {payload}"
        f" FROM {written} RETURNING id),"
        f" woken AS ({wake_when_queued('queued', params(OUTBOX_CHANNEL))})"
    )
    return ctes, "queued, woken"


def json_time(column: str) -> str:
    """SQL rendering a timestamptz `column` as `to_json` renders the datetime asyncpg
    decodes it to: UTC, microseconds only when there are any (orjson's format)."""
    utc = f"({column} AT TIME ZONE 'UTC')"
    return (
        f"to_char({utc}, 'YYYY-MM-DD\"T\"HH24:MI:SS')"
        f" || CASE WHEN date_part('microseconds', {utc})::bigint % 1000000 = 0"
        f" THEN '' ELSE to_char({utc}, '.US') END || '+00:00'"
    )


def check_version(resource: str, resource_id: UUID, actual: int, expected: int | None) -> None:
    """Optimistic concurrency: refuse a write based on a version that is no longer current."""
    if expected is not None and expected != actual:
        raise Conflict(
            f"{resource} {resource_id} is at version {actual}, you sent {expected}; "
            "reload and retry",
            field="expectedVersion",
        )


def to_json(value: object) -> JSON:
    """A record as plain JSON (ids and times become strings), as stored in jsonb."""
    plain = orjson.loads(orjson.dumps(value, default=_uuid_subclass))
    if not isinstance(plain, dict):
        raise TypeError(f"expected a record or a JSON object, got {type(value).__name__}")
    return plain


def _uuid_subclass(value: object) -> str:
    # asyncpg returns its own UUID subclass, which orjson does not take for a UUID.
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


async def claim_idempotency_key(
    conn: PgConnection, ctx: WriteContext, operation: str, response: JSON
) -> JSON | None:
    """Claim `ctx.idempotency_key` for `operation`, before writing.

    Returns None when the caller should write (no key, or this call now owns it;
    `response` is stored with it), or the stored response of an earlier call with
    the same key and operation, in which case the caller must not write again.
    A concurrent call with the same key waits here until the first one commits.
    """
    key = ctx.idempotency_key
    if key is None:
        return None
    principal = _principal(ctx, key)
    row = await conn.fetchrow(
        """
        WITH claimed AS (
            INSERT INTO idempotency_keys (principal_id, key, operation, response)
            VALUES ($1, $2, $3, $4::jsonb)
            ON CONFLICT (principal_id, key) DO NOTHING
            RETURNING 1
        )
        SELECT EXISTS (SELECT FROM claimed) AS claimed, k.operation, k.response
        FROM (VALUES (1)) AS one
        LEFT JOIN idempotency_keys AS k ON k.principal_id = $1 AND k.key = $2
        """,
        principal,
        key,
        operation,
        response,
    )
    assert row is not None
    if row["claimed"]:
        return None
    stored_operation, stored_response = row["operation"], row["response"]
    if stored_operation is None:
        # The first call committed while this statement waited, after its snapshot
        # was taken; a new statement sees it.
        again = await conn.fetchrow(
            "SELECT operation, response FROM idempotency_keys WHERE principal_id = $1 AND key = $2",
            principal,
            key,
        )
        assert again is not None
        stored_operation, stored_response = again["operation"], again["response"]
    if stored_operation != operation:
        raise Conflict(
            f"idempotency key {key!r} was already used for {stored_operation}; "
            "use a new key for a different operation",
            field="idempotencyKey",
        )
    result: JSON = stored_response
    return result


async def settle_idempotency_key(conn: PgConnection, ctx: WriteContext, response: JSON) -> None:
    """Replace the claimed key's response once the write knows its outcome."""
    key = ctx.idempotency_key
    if key is None:
        return
    await conn.execute(
        "UPDATE idempotency_keys SET response = $3::jsonb WHERE principal_id = $1 AND key = $2",
        _principal(ctx, key),
        key,
        response,
    )


async def run_once(
    store: PostgresStore,
    ctx: WriteContext,
    operation: str,
    work: Callable[[PgConnection], Awaitable[JSON]],
) -> JSON:
    """Run `work` at most once per `ctx.idempotency_key`, for a write that lands outside
    this database (Redis, the metrics store), and return its answer, or the first call's.

    The key is claimed in a transaction that stays open while `work` runs (a concurrent
    retry waits for it), then settled with the answer. `work` gets that transaction's
    connection for its audit rows. Should the commit fail after `work` succeeded, a
    retry runs `work` again, so its outside effect must be idempotent itself.
    """
    if ctx.idempotency_key is None:
        async with store.connection() as conn:
            return await work(conn)
    async with write_transaction(store) as conn:
        replay = await claim_idempotency_key(conn, ctx, operation, {})
        if replay is not None:
            return replay
        answer = await work(conn)
        await settle_idempotency_key(conn, ctx, answer)
    return answer


def _principal(ctx: WriteContext, key: str) -> UUID:
    if ctx.actor_id is None:
        # Anonymous callers would share one key space and see each other's answers.
        raise InvalidInput("idempotencyKey", "needs an authenticated caller; sign in or omit it")
    if not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_LENGTH:
        raise InvalidInput(
            "idempotencyKey", f"must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters long"
        )
    return ctx.actor_id


def _ip_or_none(address: str | None) -> str | None:
    # Test clients and some proxies report names rather than addresses.
    if address is None:
        return None
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None
