from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry

from resolvers.context import RequestContext
from schema.enums import UserRole
from schema.users import User
from stores.redis import records

if TYPE_CHECKING:
    from schema.agents import Agent

Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="A login: what it is bound to and until when.")
class Session:
    id: strawberry.ID
    role: UserRole
    created_at: datetime
    expires_at: datetime
    last_seen_at: datetime | None
    user_id: strawberry.Private[UUID]
    agent_id: strawberry.Private[UUID | None]

    @classmethod
    def from_record(cls, session: records.Session) -> Session:
        return cls(
            id=strawberry.ID(session.id),
            role=UserRole(session.role),
            created_at=session.created_at,
            expires_at=session.expires_at,
            last_seen_at=session.last_seen_at,
            user_id=session.user_id,
            agent_id=session.agent_id,
        )

    @strawberry.field
    async def user(self, info: Info) -> User | None:
        return await User.load(info, self.user_id)

    @strawberry.field
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_id)
