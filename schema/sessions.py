from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry

from resolvers.context import RequestContext
from resolvers.sessions import current_role
from schema.enums import UserRole
from schema.users import User
from stores.redis import records

if TYPE_CHECKING:
    from schema.agents import Agent

Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="A login: what it is bound to and until when.")
class Session:
    id: strawberry.ID
    created_at: datetime
    expires_at: datetime = strawberry.field(
        description="When it lapses unless used again; use slides it forward, never past `endsAt`."
    )
    ends_at: datetime | None = strawberry.field(
        description="Its absolute end, however much it is used."
    )
    last_seen_at: datetime | None
    user_id: strawberry.Private[UUID]
    agent_id: strawberry.Private[UUID | None]
    record: strawberry.Private[records.Session]

    @classmethod
    def from_record(cls, session: records.Session) -> Session:
        return cls(
            id=strawberry.ID(session.id),
            created_at=session.created_at,
            expires_at=session.expires_at,
            ends_at=session.ends_at,
            last_seen_at=session.last_seen_at,
            user_id=session.user_id,
            agent_id=session.agent_id,
            record=session,
        )

    @strawberry.field(
        description="The role it acts with now: its user's role, capped by the scopes of "
        "the key that opened it."
    )
    async def role(self, info: Info) -> UserRole:
        return UserRole((await current_role(info.context, self.record)).value)

    @strawberry.field
    async def user(self, info: Info) -> User | None:
        return await User.load(info, self.user_id)

    @strawberry.field
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_id)
