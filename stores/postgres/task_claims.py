"""Work distribution: agents pull ready tasks and hold them under a lease.

    pending --claim--> assigned --start--> in_progress --complete/fail--> ...
       ^                  |                     |
       +---- lease lapsed (a retry counted; failed once retries are used up)

A claim takes the highest-priority pending task whose dependencies have all
completed and whose `required_capabilities` the claimer has, in ONE statement:
`FOR NO KEY UPDATE SKIP LOCKED` (the `FOR UPDATE` family, weak enough that rows
referencing the task need not wait) lets concurrent claimers pass each other
instead of queueing on one row, and the row's new version, its event, the audit
row and the outbox row are written by the same statement.

Each claim adds one to the task's `fencing_token`. The holder sends it back with
every heartbeat, start, completion and failure; a token that is not the task's
current one, or a lease that has lapsed, is refused with `Conflict`, so a holder
that stalled past its lease cannot overwrite the work of the one who claimed next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID

from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres.inputs import check_text
from stores.postgres.outbox import OUTBOX_CHANNEL
from stores.postgres.pagination import Params
from stores.postgres.records import Task, WriteContext
from stores.postgres.task_events import (
    QUEUE_UPSERTED,
    ROW,
    _event_insert,
    change_task,
    task_from_row,
    task_json,
)
from stores.postgres.writes import (
    _ip_or_none,
    claim_idempotency_key,
    json_time,
    settle_idempotency_key,
    write_audit,
    write_transaction,
)

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

MAX_LEASE_S = 3600
MAX_CAPABILITIES = 100
# Tasks one sweep statement returns to the queue; the sweep repeats while it finds more.
SWEEP_BATCH = 100
# Newly ready dependents announced after one completion; more are found by polling.
MAX_READY_ANNOUNCED = 100

# A claimer's agent and what it can do, if its grant holds (one query for both).
CLAIMER_CAPABILITIES = (
    "SELECT a.capabilities FROM agent_grants AS g JOIN agents AS a ON a.id = g.agent_id"
    " WHERE g.user_id = $1 AND g.agent_id = $2"
)
_READY = (
    "NOT EXISTS (SELECT FROM task_dependencies AS d JOIN tasks AS dep ON dep.id = d.depends_on_id"
    " WHERE d.task_id = {task}.id AND dep.status <> 'completed')"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClaimOptions:
    """How claims behave: a claim's lease when the claimer names none, the longest a
    claimer may wait for work (keep it under the request deadline), and how often,
    at most, the lease sweep looks for lapsed leases."""

    lease_s: float = 60.0
    max_wait_s: float = 20.0
    sweep_interval_s: float = 5.0

    def __post_init__(self) -> None:
        check_lease_s(self.lease_s)
        if not 0 <= self.max_wait_s <= 300:
            raise ValueError("max_wait_s must be from 0 to 300 seconds")
        if self.sweep_interval_s <= 0:
            raise ValueError("sweep_interval_s must be positive")


class TaskClaims:
    """Claims, heartbeats and the lease sweep over the `tasks` table."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def claim_next(
        self,
        ctx: WriteContext,
        agent_id: UUID,
        *,
        capabilities: Sequence[str],
        repository: str | None,
        lease_s: float,
    ) -> Task | None:
        """Claim the best ready task for `agent_id`, or None when there is none now."""
        sql, values = claim_statement(
            ctx, agent_id, capabilities=capabilities, repository=repository, lease_s=lease_s
        )
        if ctx.idempotency_key is not None:
            return await self._claim_once(ctx, sql, values)
        async with self._store.connection() as conn:
            row = await conn.fetchrow(sql, *values)
        if row is None:
            return None
        ctx.outbox_ids.append(row["outbox_id"])
        return task_from_row(row)

    async def _claim_once(self, ctx: WriteContext, sql: str, values: list[object]) -> Task | None:
        """A claim under an idempotency key: a retry answers the task the first call
        claimed. A call that claimed nothing keeps no key, so a retry may claim."""
        try:
            async with write_transaction(self._store) as conn:
                replay = await claim_idempotency_key(conn, ctx, "task.claim", {})
                if replay is not None:
                    found = await conn.fetchrow(
                        f"SELECT {ROW} FROM tasks WHERE id = $1", UUID(replay["id"])
                    )
                    return None if found is None else task_from_row(found)
                row = await conn.fetchrow(sql, *values)
                if row is None:
                    raise _NothingClaimed
                await settle_idempotency_key(conn, ctx, {"id": str(row["id"])})
        except _NothingClaimed:
            return None
        ctx.outbox_ids.append(row["outbox_id"])
        return task_from_row(row)

    async def claimer_capabilities(self, user_id: UUID, agent_id: UUID) -> tuple[str, ...] | None:
        """The capabilities of `agent_id` if `user_id` may act as it; None if not."""
        async with self._store.connection() as conn:
            found = await conn.fetchval(CLAIMER_CAPABILITIES, user_id, agent_id)
        return None if found is None else tuple(found)

    async def heartbeat(
        self,
        ctx: WriteContext,
        task_id: UUID,
        *,
        fencing_token: int,
        holder_id: UUID,
        lease_s: float,
    ) -> Task:
        """Extend the holder's lease to `lease_s` from now."""
        check_lease_s(lease_s)
        async with write_transaction(self._store) as conn:
            replay = await claim_idempotency_key(conn, ctx, f"task.heartbeat {task_id}", {})
            if replay is not None:
                found = await conn.fetchrow(f"SELECT {ROW} FROM tasks WHERE id = $1", task_id)
                if found is None:
                    raise NotFound("task", task_id, field="id")
                return task_from_row(found)
            row = await conn.fetchrow(
                f"SELECT {ROW}, now() AS now FROM tasks WHERE id = $1 FOR NO KEY UPDATE", task_id
            )
            if row is None:
                raise NotFound("task", task_id, field="id")
            current = task_from_row(row)
            check_holder(current, fencing_token, holder_id, now=row["now"])
            expires = row["now"] + timedelta(seconds=lease_s)
            task = await change_task(conn, ctx, current, {"lease_expires_at": expires}, "heartbeat")
            await write_audit(
                conn,
                ctx,
                "heartbeat",
                "task",
                task_id,
                {"lease_expires_at": current.lease_expires_at},
                {"lease_expires_at": expires, "fencing_token": fencing_token},
            )
        return task

    async def expire_leases(self, ctx: WriteContext, *, limit: int = SWEEP_BATCH) -> list[Task]:
        """Return up to `limit` tasks whose lease lapsed to the queue, counting a retry,
        or fail those whose retries are used up; each with its event, audit and outbox
        rows. Rows another sweeper holds are skipped, so replicas share the work and
        none returns a task twice."""
        params = Params([limit])
        retry = "l.retry_count < l.max_retries"
        changed = [
            "status",
            "assignee_id",
            "started_at",
            "completed_at",
            "error_message",
            "retry_count",
            "lease_expires_at",
        ]
        event = _event_insert(params, "lease_expired", changed, {}, ctx)
        sql = (
            "WITH l AS (SELECT id, status, assignee_id, fencing_token, retry_count, max_retries,"
            " lease_expires_at FROM tasks WHERE lease_expires_at < now()"
            " ORDER BY lease_expires_at LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED),"
            " t AS (UPDATE tasks SET"
            f" status = CASE WHEN {retry} THEN 'pending' ELSE 'failed' END,"
            f" assignee_id = CASE WHEN {retry} THEN NULL ELSE l.assignee_id END,"
            f" started_at = CASE WHEN {retry} THEN NULL ELSE tasks.started_at END,"
            f" completed_at = CASE WHEN {retry} THEN NULL ELSE now() END,"
            f" error_message = CASE WHEN {retry} THEN NULL ELSE"
            " 'the lease lapsed with no retries left (maxRetries ' || l.max_retries || ')' END,"
            f" retry_count = CASE WHEN {retry} THEN l.retry_count + 1 ELSE l.retry_count END,"
            " lease_expires_at = NULL, version = tasks.version + 1, updated_at = now()"
            f" FROM l WHERE tasks.id = l.id RETURNING {_qualified('tasks')}),"
            f" e AS ({event}),"
            " a AS (INSERT INTO audit_log (actor_id, action, resource_type, resource_id,"
            " old_value, new_value, request_id)"
            f" SELECT {params(ctx.actor_id)}::uuid, 'lease_expired', 'task', t.id::text,"
            " jsonb_build_object('status', l.status, 'assignee_id', l.assignee_id,"
            f" 'lease_expires_at', {json_time('l.lease_expires_at')},"
            " 'fencing_token', l.fencing_token,"
            f" 'retry_count', l.retry_count), {task_json('t')}, {params(ctx.request_id)}"
            " FROM t JOIN l ON l.id = t.id),"
            f" o AS ({QUEUE_UPSERTED})"
            f" SELECT t.*, pg_notify({params(OUTBOX_CHANNEL)}, '') FROM t"
        )
        async with self._store.connection() as conn:
            rows = await conn.fetch(sql, *params.values)
        return [task_from_row(row) for row in rows]

    async def next_expiry_s(self) -> float | None:
        """Seconds until the first held lease lapses (0 if one has); None: no lease held."""
        async with self._store.connection() as conn:
            # Not `greatest(0, ...)` in SQL: it skips a NULL, and would answer 0 for no
            # lease at all, which sent the sweeper round every 50 ms on an idle gateway.
            seconds = await conn.fetchval(
                "SELECT extract(epoch FROM min(lease_expires_at) - now())::float8"
                " FROM tasks WHERE lease_expires_at IS NOT NULL"
            )
        return None if seconds is None else max(float(seconds), 0.0)

    async def ready_dependents(self, task_id: UUID) -> list[Task]:
        """Pending tasks waiting for `task_id` whose dependencies have now all completed."""
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_qualified('t')} FROM tasks AS t"
                " JOIN task_dependencies AS w ON w.task_id = t.id"
                " WHERE w.depends_on_id = $1 AND t.status = 'pending'"
                f" AND {_READY.format(task='t')}"
                f" ORDER BY t.priority DESC, t.created_at, t.id LIMIT {MAX_READY_ANNOUNCED}",
                task_id,
            )
        return [task_from_row(row) for row in rows]


def claim_statement(
    ctx: WriteContext,
    agent_id: UUID,
    *,
    capabilities: Sequence[str],
    repository: str | None,
    lease_s: float,
) -> tuple[str, list[object]]:
    """The one statement a claim is, and its values: it returns the claimed task's row
    and its outbox id, or no row. The benchmark's floor runs it too. A ready row that
    another transaction holds at that instant (another claim, or the embedding filler
    storing its vector) is passed over for the next best: a claim never waits on a row.

    Unlike other writes it does not NOTIFY the projectors: PostgreSQL serialises the
    commits of transactions that NOTIFY, which held 20 claimers to about 400 claims/s
    where they make 1,000 without (test stack, 2 cores). The projector's poll picks
    the claim's outbox row up within `idle_poll_s` (workers/projector.py)."""
    held = check_capabilities("capabilities", capabilities)
    check_lease_s(lease_s)
    if repository is not None:
        check_text("repository", repository, 500)
    params = Params([agent_id, held, float(lease_s)])
    where = ["c.status = 'pending'", "c.required_capabilities <@ $2::text[]"]
    if repository is not None:
        where.append(f"c.repository = {params(repository)}")
    where.append(_READY.format(task="c"))
    changed = ["status", "assignee_id", "lease_expires_at", "fencing_token"]
    event = _event_insert(params, "claimed", changed, {"from": "pending"}, ctx)
    audit = (
        "INSERT INTO audit_log (actor_id, action, resource_type, resource_id, old_value,"
        " new_value, request_id, client_address)"
        f" SELECT {params(ctx.actor_id)}::uuid, 'claim', 'task', t.id::text,"
        " jsonb_build_object('status', 'pending', 'fencing_token', t.fencing_token - 1),"
        f" {task_json('t')}, {params(ctx.request_id)},"
        f" {params(_ip_or_none(ctx.client_address))}::inet"
        " FROM t"
    )
    sql = (
        f"WITH picked AS (SELECT c.id FROM tasks AS c WHERE {' AND '.join(where)}"
        " ORDER BY c.priority DESC, c.created_at, c.id LIMIT 1"
        " FOR NO KEY UPDATE OF c SKIP LOCKED),"
        " t AS (UPDATE tasks SET status = 'assigned', assignee_id = $1,"
        " lease_expires_at = now() + make_interval(secs => $3),"
        " fencing_token = fencing_token + 1, version = version + 1, updated_at = now()"
        f" WHERE id = (SELECT id FROM picked) RETURNING {ROW}),"
        f" e AS ({event}), a AS ({audit}),"
        f" o AS ({QUEUE_UPSERTED} RETURNING id)"
        " SELECT t.*, o.id AS outbox_id FROM t CROSS JOIN o"
    )
    return sql, params.values


def check_holder(
    task: Task, fencing_token: int | None, holder_id: UUID | None, *, now: datetime | None
) -> None:
    """Refuse a claimer's write unless it holds the task's current claim.

    `holder_id` is the agent a claimer acts as (None for an operator). A task never
    claimed (assigned by hand) lets its assignee through without a token."""
    if task.lease_expires_at is None:
        if fencing_token is None:
            return
        raise Conflict(
            f"task {task.id} is not claimed any more (it is {task.status}); your claim"
            f" {fencing_token} is stale: drop the work and claim again",
            field="fencingToken",
        )
    if fencing_token is None:
        if holder_id is None:
            return
        raise InvalidInput(
            "fencingToken", f"task {task.id} is claimed: send the fencingToken its claim returned"
        )
    if fencing_token != task.fencing_token:
        raise Conflict(
            f"task {task.id} was claimed again (claim {task.fencing_token}); your claim"
            f" {fencing_token} is stale: drop the work and claim again",
            field="fencingToken",
        )
    assert now is not None, "a leased task is checked against the database's time"
    if task.lease_expires_at <= now:
        raise Conflict(
            f"the lease on task {task.id} lapsed at {task.lease_expires_at.isoformat()};"
            " it returns to the queue: drop the work and claim again",
            field="fencingToken",
        )
    if holder_id is not None and holder_id != task.assignee_id:
        raise Conflict(
            f"task {task.id} is claimed by agent {task.assignee_id}, not {holder_id}",
            field="fencingToken",
        )


def check_lease_s(lease_s: float) -> None:
    if isinstance(lease_s, bool) or not 1 <= lease_s <= MAX_LEASE_S:
        raise InvalidInput("leaseSeconds", f"must be from 1 to {MAX_LEASE_S} seconds")


def check_capabilities(field: str, values: object) -> tuple[str, ...]:
    """Distinct capability names, sorted; refused when not a bounded list of short text."""
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidInput(field, "must be a list of text")
    names = sorted(set(values))
    if len(names) > MAX_CAPABILITIES:
        raise InvalidInput(field, f"has {len(names)} entries; the limit is {MAX_CAPABILITIES}")
    for name in names:
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise InvalidInput(field, "entries must be 1 to 100 characters")
    return tuple(names)


DEFAULT_CLAIM_OPTIONS = ClaimOptions()


class _NothingClaimed(Exception):
    """Rolls back a keyed claim that found no task, so its key is not kept."""


def _qualified(table: str) -> str:
    return ", ".join(f"{table}.{column.strip()}" for column in ROW.split(","))
