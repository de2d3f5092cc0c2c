"""Agent grants: which users may act as which agents (sessions bound with `agentId`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING
from uuid import UUID

from asyncpg import Record

from stores.errors import NotFound
from stores.postgres.options import PgConnection
from stores.postgres.pagination import Page, PageRequest, Params, fetch_page, ordering
from stores.postgres.records import AgentGrant, WriteContext
from stores.postgres.writes import (
    claim_idempotency_key,
    settle_idempotency_key,
    write_audit,
    write_transaction,
)

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

_COLUMNS = "id, user_id, agent_id, granted_by, created_at"
_OLDEST_FIRST = ordering("grants.created", ("created_at", "timestamp"), ("id", "uuid"))


class AgentGrantRepository:
    """Reached as `PostgresStore.agent_grants`."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def grant(
        self, ctx: WriteContext, user_id: UUID, agent_id: UUID
    ) -> tuple[AgentGrant, bool]:
        """Let `user_id` act as `agent_id`; the grant, and False if it already existed.
        A new grant is audited in the same transaction."""
        refusals = {
            "agent_grants_user_id_fkey": lambda: NotFound("user", user_id, field="userId"),
            "agent_grants_agent_id_fkey": lambda: NotFound("agent", agent_id, field="agentId"),
        }
        async with write_transaction(self._store, refusals) as conn:
            operation = f"agent_grant.create {user_id} {agent_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"created": False})
            if replay is not None:
                return await _existing(conn, user_id, agent_id), bool(replay["created"])
            row = await conn.fetchrow(
                "INSERT INTO agent_grants (user_id, agent_id, granted_by) VALUES ($1, $2, $3)"
                f" ON CONFLICT (user_id, agent_id) DO NOTHING RETURNING {_COLUMNS}",
                user_id,
                agent_id,
                ctx.actor_id,
            )
            if row is None:
                return await _existing(conn, user_id, agent_id), False
            grant = _grant(row)
            new = {"user_id": str(user_id), "agent_id": str(agent_id)}
            await write_audit(conn, ctx, "agent_grant.create", "agent_grant", grant.id, None, new)
            await settle_idempotency_key(conn, ctx, {"created": True})
        return grant, True

    async def revoke(self, ctx: WriteContext, user_id: UUID, agent_id: UUID) -> bool:
        """Stop `user_id` acting as `agent_id`; False if it could not. Audited."""
        async with write_transaction(self._store) as conn:
            operation = f"agent_grant.revoke {user_id} {agent_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"revoked": False})
            if replay is not None:
                return bool(replay["revoked"])
            row = await conn.fetchrow(
                "DELETE FROM agent_grants WHERE user_id = $1 AND agent_id = $2"
                f" RETURNING {_COLUMNS}",
                user_id,
                agent_id,
            )
            if row is None:
                return False
            grant = _grant(row)
            old = {"user_id": str(user_id), "agent_id": str(agent_id)}
            await write_audit(conn, ctx, "agent_grant.revoke", "agent_grant", grant.id, old, None)
            await settle_idempotency_key(conn, ctx, {"revoked": True})
        return True

    async def allows(self, user_id: UUID, agent_id: UUID) -> bool:
        """True if `user_id` may act as `agent_id`."""
        async with self._store.connection() as conn:
            found: bool = await conn.fetchval(
                "SELECT EXISTS (SELECT FROM agent_grants WHERE user_id = $1 AND agent_id = $2)",
                user_id,
                agent_id,
            )
        return found

    async def allowed(self, pairs: Iterable[tuple[UUID, UUID]]) -> set[tuple[UUID, UUID]]:
        """Which (user, agent) pairs of `pairs` hold a grant; one query for all of them."""
        unique = list(dict.fromkeys(pairs))
        if not unique:
            return set()
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                "SELECT g.user_id, g.agent_id FROM unnest($1::uuid[], $2::uuid[]) AS p(u, a)"
                " JOIN agent_grants AS g ON g.user_id = p.u AND g.agent_id = p.a",
                [user for user, _ in unique],
                [agent for _, agent in unique],
            )
        return {(row["user_id"], row["agent_id"]) for row in rows}

    async def list(
        self,
        *,
        user_id: UUID | None,
        agent_id: UUID | None,
        page: PageRequest,
        with_total: bool = False,
    ) -> Page[AgentGrant]:
        """Grants of a user, of an agent, or (neither given) all of them, oldest first."""
        params = Params()
        where: list[str] = []
        if user_id is not None:
            where.append(f"user_id = {params(user_id)}")
        if agent_id is not None:
            where.append(f"agent_id = {params(agent_id)}")
        async with self._store.connection() as conn:
            return await fetch_page(
                conn,
                select=_COLUMNS,
                source="agent_grants",
                where=where,
                params=params,
                order=_OLDEST_FIRST,
                page=page,
                with_total=with_total,
                decode=_grant,
            )


def _grant(row: Record) -> AgentGrant:
    return AgentGrant(
        id=row["id"],
        user_id=row["user_id"],
        agent_id=row["agent_id"],
        granted_by=row["granted_by"],
        created_at=row["created_at"],
    )


async def _existing(conn: PgConnection, user_id: UUID, agent_id: UUID) -> AgentGrant:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM agent_grants WHERE user_id = $1 AND agent_id = $2",
        user_id,
        agent_id,
    )
    if row is None:
        # Replayed after someone else revoked it: the first answer's grant is gone.
        raise NotFound("agent grant", user_id, field="agentId")
    return _grant(row)
