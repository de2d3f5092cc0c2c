from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry

from resolvers.context import RequestContext
from stores.postgres import records

if TYPE_CHECKING:
    from schema.agents import Agent

Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="Points awarded to an agent for something it did.")
class Achievement:
    type: str
    points: int
    awarded_at: datetime
    agent_id: strawberry.Private[UUID]

    @classmethod
    def from_record(cls, achievement: records.Achievement) -> Achievement:
        return cls(
            type=achievement.type,
            points=achievement.points,
            awarded_at=achievement.awarded_at,
            agent_id=achievement.agent_id,
        )

    @strawberry.field
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_id)


@strawberry.type(description="One row of the leaderboard.")
class LeaderboardEntry:
    rank: int
    points: int
    achievements: int
    agent_id: strawberry.Private[UUID]

    @strawberry.field
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_id)
