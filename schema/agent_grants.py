"""Agent grants: which users may act as which agents. Operators and admins manage them."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers import agent_grants as resolve
from resolvers.context import RequestContext
from schema.idempotency import idempotency_key
from schema.relay import CountedConnection, decode_id, page_request, wants_total
from schema.user_errors import UserError, attempt
from schema.users import User
from stores.postgres import records

if TYPE_CHECKING:
    from schema.agents import Agent

Info = strawberry.Info[RequestContext, None]


@strawberry.type(
    description="A user may act as an agent: bind a session to it (`login` with `agentId`) "
    "and write as it."
)
class AgentGrant:
    id: strawberry.ID
    created_at: datetime
    record: strawberry.Private[records.AgentGrant]

    @classmethod
    def from_record(cls, grant: records.AgentGrant) -> AgentGrant:
        return cls(id=strawberry.ID(str(grant.id)), created_at=grant.created_at, record=grant)

    @strawberry.field
    async def user(self, info: Info) -> User | None:
        return await User.load(info, self.record.user_id)

    @strawberry.field
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.record.agent_id)

    @strawberry.field(description="Who granted it.")
    async def granted_by(self, info: Info) -> User | None:
        return await User.load(info, self.record.granted_by)


@strawberry.type
class AgentGrantConnection(CountedConnection[AgentGrant]):  # type: ignore[type-var]
    pass


@strawberry.input(description="Leave a field out to match every user or agent.")
class AgentGrantFilter:
    user_id: relay.GlobalID | None = None
    agent_id: relay.GlobalID | None = None


@strawberry.input
class AgentGrantInput:
    user_id: relay.GlobalID
    agent_id: relay.GlobalID
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class AgentGrantPayload:
    grant: AgentGrant | None
    created: bool = strawberry.field(description="False when the grant already existed.")
    user_errors: list[UserError]


@strawberry.type
class RevokeAgentGrantPayload:
    revoked: bool = strawberry.field(description="False when there was no such grant.")
    user_errors: list[UserError]


def _ids(input: AgentGrantInput) -> tuple[UUID, UUID]:
    return (
        decode_id(input.user_id, "User", field="userId"),
        decode_id(input.agent_id, "Agent", field="agentId"),
    )


@strawberry.type
class AgentGrantQueries:
    @strawberry.field(
        description="Who may act as which agent, oldest first. Operators and up; anyone "
        "signed in may list their own (`filter: {userId: <your id>}`)."
    )
    async def agent_grants(
        self,
        info: Info,
        filter: AgentGrantFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> AgentGrantConnection:
        wanted = filter or AgentGrantFilter()
        page = await resolve.list_grants(
            info.context,
            user_id=decode_id(wanted.user_id, "User", field="filter.userId")
            if wanted.user_id
            else None,
            agent_id=decode_id(wanted.agent_id, "Agent", field="filter.agentId")
            if wanted.agent_id
            else None,
            page=page_request(first, after, last, before),
            with_total=wants_total(info),
        )
        return AgentGrantConnection.from_page(page, AgentGrant.from_record)


@strawberry.type
class AgentGrantMutations:
    @strawberry.mutation(description="Let a user act as an agent. Operators and up; audited.")
    async def grant_agent_access(self, info: Info, input: AgentGrantInput) -> AgentGrantPayload:
        async def run() -> tuple[records.AgentGrant, bool]:
            return await resolve.grant(
                info.context, *_ids(input), idempotency_key=input.idempotency_key
            )

        outcome, errors = await attempt(run())
        if outcome is None:
            return AgentGrantPayload(grant=None, created=False, user_errors=errors)
        return AgentGrantPayload(
            grant=AgentGrant.from_record(outcome[0]), created=outcome[1], user_errors=errors
        )

    @strawberry.mutation(
        description="Stop a user acting as an agent: its writes as the agent are refused at "
        "once. Operators and up; audited."
    )
    async def revoke_agent_access(
        self, info: Info, input: AgentGrantInput
    ) -> RevokeAgentGrantPayload:
        async def run() -> bool:
            return await resolve.revoke(
                info.context, *_ids(input), idempotency_key=input.idempotency_key
            )

        revoked, errors = await attempt(run())
        return RevokeAgentGrantPayload(revoked=bool(revoked), user_errors=errors)
