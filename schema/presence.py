"""Agents' live presence: `Agent.presence`, `agentsOnline`, `reportPresence` and the
`presenceChanged` subscription."""

from __future__ import annotations

import enum
from collections.abc import AsyncGenerator
from datetime import datetime
from functools import partial
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers import presence as resolve
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.live import live_events
from schema.agents import Agent, AgentConnection
from schema.enums import AgentOrder
from schema.inputs import AgentFilter
from schema.relay import page_request, require_ids, wants_total
from schema.scalars import JSON
from schema.user_errors import UserError, attempt
from stores.postgres.inputs import AgentOrder as StoreAgentOrder
from stores.redis import records

Info = strawberry.Info[RequestContext, None]


@strawberry.type(
    description="What an agent reported last (Redis). Offline once no heartbeat has come "
    "for POLYGRAPH_PRESENCE_OFFLINE_AFTER_S; `Agent.status` (PostgreSQL) is the durable "
    "state."
)
class AgentPresence:
    online: bool
    last_seen_at: datetime | None = strawberry.field(
        description="The last heartbeat; kept after the agent goes offline."
    )
    activity: str | None = strawberry.field(description="What it said it is doing; null offline.")
    load: float | None = strawberry.field(description="0 (idle) to 1 (fully loaded); null offline.")
    agent_id: strawberry.Private[UUID]
    record: strawberry.Private[records.Presence]

    @classmethod
    def from_record(cls, agent_id: UUID, presence: records.Presence) -> AgentPresence:
        return cls(
            online=presence.online,
            last_seen_at=presence.last_seen_at,
            activity=presence.activity,
            load=presence.load,
            agent_id=agent_id,
            record=presence,
        )

    @strawberry.field(description="The reported details: for the agent itself and operators.")
    def details(self, info: Info) -> JSON | None:
        if not resolve.may_read_details(info.context, self.agent_id):
            raise ClientError(
                ErrorCode.FORBIDDEN,
                "An agent's presence details are for the agent itself and operators.",
            )
        return self.record.details


async def presence_field(info: Info, agent_id: UUID) -> AgentPresence:
    """`Agent.presence`: one Redis round trip for every agent of the response."""
    return AgentPresence.from_record(agent_id, await resolve.presence_of(info.context, agent_id))


@strawberry.input(description="A heartbeat: send it every few seconds, well within the timeout.")
class ReportPresenceInput:
    activity: str = strawberry.field(description="What the agent is doing: 1 to 200 characters.")
    load: float = strawberry.field(default=0.0, description="0 (idle) to 1 (fully loaded).")
    details: JSON = strawberry.field(
        default_factory=dict,
        description="A JSON object, POLYGRAPH_PRESENCE_DETAILS_MAX_BYTES at most.",
    )


@strawberry.type
class ReportPresencePayload:
    presence: AgentPresence | None
    user_errors: list[UserError]


@strawberry.enum(description="What changed: only these are announced, never a plain heartbeat.")
class PresenceChangeKind(enum.Enum):
    ONLINE = "online"
    OFFLINE = "offline"
    ACTIVITY = "activity"


@strawberry.type(description="An agent came online, went offline or changed activity.")
class PresenceChange:
    agent: Agent
    change: PresenceChangeKind
    online: bool
    activity: str | None
    load: float | None
    last_seen_at: datetime | None
    at: datetime


@strawberry.input(description="Leave a field out to match everything.")
class PresenceChangedFilter:
    agent_ids: list[relay.GlobalID] | None = None
    changes: list[PresenceChangeKind] | None = None


def _change(event: records.PresenceChange, agent: Agent) -> PresenceChange:
    presence = event.presence
    return PresenceChange(
        agent=agent,
        change=PresenceChangeKind(event.change),
        online=presence.online,
        activity=presence.activity,
        load=presence.load,
        last_seen_at=presence.last_seen_at,
        at=event.at,
    )


@strawberry.type
class PresenceQueries:
    @strawberry.field(
        description="Agents online now (a heartbeat within POLYGRAPH_PRESENCE_OFFLINE_AFTER_S) "
        "that pass `filter`, paged like `agents`; null with STORE_UNAVAILABLE while Redis is down."
    )
    async def agents_online(
        self,
        info: Info,
        filter: AgentFilter | None = None,
        order_by: AgentOrder = AgentOrder.NAME_ASC,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> AgentConnection | None:
        page = await resolve.agents_online(
            info.context,
            (filter or AgentFilter()).to_store(),
            StoreAgentOrder[order_by.name],
            page_request(first, after, last, before),
            with_total=wants_total(info),
        )
        for agent in page.items:
            info.context.loaders.agent_by_id.prime(agent.id, agent)
        return AgentConnection.from_page(page, Agent.from_record)


@strawberry.type
class PresenceMutations:
    @strawberry.mutation(
        description="A heartbeat from an agent's own session (`login` with `agentId`): it is "
        "online for POLYGRAPH_PRESENCE_OFFLINE_AFTER_S more. Kept in Redis, never in "
        "PostgreSQL; coming online and a new activity are announced on `presenceChanged`."
    )
    async def report_presence(
        self, info: Info, input: ReportPresenceInput
    ) -> ReportPresencePayload:
        ctx = info.context

        async def run() -> AgentPresence:
            reported = await resolve.report_presence(
                ctx, activity=input.activity, load=input.load, details=input.details
            )
            assert ctx.principal.agent_id is not None
            return AgentPresence.from_record(ctx.principal.agent_id, reported)

        presence, errors = await attempt(run())
        return ReportPresencePayload(presence=presence, user_errors=errors)


@strawberry.type
class PresenceSubscriptions:
    @strawberry.subscription(
        description="Agents coming online, going offline (noticed by a sweep every "
        "POLYGRAPH_PRESENCE_SWEEP_S) or changing activity, from any gateway replica; "
        "heartbeats that change nothing are not sent."
    )
    async def presence_changed(
        self, info: Info, filter: PresenceChangedFilter | None = None
    ) -> AsyncGenerator[PresenceChange, None]:
        resolve.require_viewer(info.context)
        wanted = filter or PresenceChangedFilter()
        agent_ids = (
            set(require_ids(wanted.agent_ids, "Agent", field="filter.agentIds"))
            if wanted.agent_ids
            else None
        )
        changes = {kind.value for kind in wanted.changes} if wanted.changes else None
        async for event in live_events(info.context, resolve.PRESENCE_CHANNEL, shareable=True):
            change = resolve.change_from_event(event)
            if agent_ids is not None and change.agent_id not in agent_ids:
                continue
            if changes is not None and change.change not in changes:
                continue
            agent = await Agent.load(info, change.agent_id)
            if agent is not None:
                yield event.memo("presence_change", partial(_change, change, agent))
