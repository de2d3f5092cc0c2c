"""Achievements: awarding points and the leaderboard."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from resolvers.context import RequestContext
from stores.postgres.records import Achievement, LeaderboardEntry


async def leaderboard(
    ctx: RequestContext, *, first: int, since: datetime | None
) -> list[LeaderboardEntry]:
    return await ctx.stores.postgres.achievements.leaderboard(first=first, since=since)


async def award_achievement(
    ctx: RequestContext, agent_id: UUID, type: str, points: int, *, idempotency_key: str | None
) -> Achievement:
    return await ctx.stores.postgres.achievements.award(
        ctx.write_context(idempotency_key), agent_id, type, points
    )
