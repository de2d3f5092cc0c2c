"""Achievements: points awarded to agents, and the leaderboard they add up to."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from asyncpg import Record

from stores.errors import NotFound
from stores.postgres.inputs import check_int, check_text
from stores.postgres.pagination import Params, check_page_size
from stores.postgres.records import Achievement, LeaderboardEntry, WriteContext
from stores.postgres.writes import claim_idempotency_key, write_audit, write_transaction

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

MAX_POINTS = 1_000_000

_COLUMNS = "id, agent_id, type, points, awarded_at"


class AchievementRepository:
    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def award(self, ctx: WriteContext, agent_id: UUID, type: str, points: int) -> Achievement:
        check_text("type", type, 100)
        check_int("points", points, -MAX_POINTS, MAX_POINTS)
        achievement_id = uuid4()
        refusals = {
            "achievements_agent_id_fkey": lambda: NotFound("agent", agent_id, field="agentId")
        }
        async with write_transaction(self._store, refusals) as conn:
            replay = await claim_idempotency_key(
                conn, ctx, "achievement.award", {"id": str(achievement_id)}
            )
            if replay is not None:
                row = await conn.fetchrow(
                    f"SELECT {_COLUMNS} FROM achievements WHERE id = $1", UUID(replay["id"])
                )
                if row is None:
                    raise NotFound("achievement", replay["id"])
                return _achievement(row)
            row = await conn.fetchrow(
                "INSERT INTO achievements (id, agent_id, type, points) VALUES ($1, $2, $3, $4)"
                f" RETURNING {_COLUMNS}",
                achievement_id,
                agent_id,
                type,
                points,
            )
            assert row is not None
            achievement = _achievement(row)
            await write_audit(conn, ctx, "award", "achievement", achievement.id, None, achievement)
        return achievement

    async def for_agents(
        self, agent_ids: Sequence[UUID], *, first: int
    ) -> dict[UUID, list[Achievement]]:
        """Each agent's achievements, newest first, at most `first` per agent, in one
        query (the limit applied per agent inside it)."""
        found: dict[UUID, list[Achievement]] = {agent_id: [] for agent_id in agent_ids}
        if not found or first <= 0:
            return found
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT h.* FROM unnest($1::uuid[]) AS a(id) CROSS JOIN LATERAL"
                f" (SELECT {_COLUMNS} FROM achievements WHERE agent_id = a.id"
                " ORDER BY awarded_at DESC, id LIMIT $2) AS h"
                " ORDER BY h.agent_id, h.awarded_at DESC, h.id",
                list(found),
                first,
            )
        for row in rows:
            found[row["agent_id"]].append(_achievement(row))
        return found

    async def leaderboard(
        self, *, first: int, since: datetime | None = None
    ) -> list[LeaderboardEntry]:
        """Agents by points won (since `since`, inclusive), ties by count then id."""
        check_page_size(first)
        params = Params([first])
        where = "" if since is None else f" WHERE awarded_at >= {params(since)}"
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                "SELECT agent_id, sum(points) AS points, count(*) AS achievements"
                f" FROM achievements{where} GROUP BY agent_id"
                " ORDER BY points DESC, achievements DESC, agent_id LIMIT $1",
                *params.values,
            )
        return [
            LeaderboardEntry(
                agent_id=row["agent_id"], points=row["points"], achievements=row["achievements"]
            )
            for row in rows
        ]


def _achievement(row: Record) -> Achievement:
    return Achievement(
        id=row["id"],
        agent_id=row["agent_id"],
        type=row["type"],
        points=row["points"],
        awarded_at=row["awarded_at"],
    )
