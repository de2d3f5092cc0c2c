"""Agents' live presence: who may report it and read it, and the events it raises.

An agent reports from a session bound to it (`login` with `agentId`); presence lives
in Redis (stores/redis/presence.py) and is never the source of truth for anything
durable: `Agent.status` stays in PostgreSQL.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID

from resolvers.agent_grants import is_operator, require_acts_as
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.writes import publish
from stores.postgres.inputs import AgentFilter, AgentOrder
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import Agent
from stores.redis.presence import PRESENCE_CHANNEL as PRESENCE_CHANNEL
from stores.redis.presence import PresenceStore, change_event
from stores.redis.presence import change_from_event as change_from_event
from stores.redis.records import Presence

# agentsOnline looks at this many of the most recently seen agents at most.
MAX_ONLINE = 10_000


def presence_store(ctx: RequestContext) -> PresenceStore:
    if ctx.stores.presence is None:
        raise RuntimeError("no presence store: pass `presence=` to `Stores` in create_app")
    return ctx.stores.presence


async def report_presence(
    ctx: RequestContext, *, activity: str, load: float, details: dict[str, Any]
) -> Presence:
    """A heartbeat of the agent the caller's session is bound to; transitions (online,
    activity) are announced on `presenceChanged`, plain heartbeats are not."""
    principal = ctx.principal
    require(principal, at_least=Role.AGENT)
    if principal.agent_id is None:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            "Presence comes from an agent's own session: log in with `agentId` "
            "(`login(input: {apiKey, agentId})`) and report with that token.",
        )
    await require_acts_as(ctx.stores, principal, principal.agent_id, doing="reporting presence")
    presence, changes = await presence_store(ctx).report(
        principal.agent_id, activity=activity, load=load, details=details
    )
    for change in changes:
        await publish(ctx, PRESENCE_CHANNEL, change_event(change))
    return presence


async def presence_of(ctx: RequestContext, agent_id: UUID) -> Presence:
    """Batched with every other agent of the request: one Redis round trip."""
    require(ctx.principal, at_least=Role.VIEWER)
    return await ctx.loaders.presence_by_agent_id.load(agent_id)


def require_viewer(ctx: RequestContext) -> None:
    require(ctx.principal, at_least=Role.VIEWER)


def may_read_details(ctx: RequestContext, agent_id: UUID) -> bool:
    """An agent's reported details are for itself and operators; its online state,
    activity and load are for every viewer."""
    principal = ctx.principal
    return is_operator(principal) or principal.agent_id == agent_id


async def agents_online(
    ctx: RequestContext,
    filter: AgentFilter,
    order: AgentOrder,
    page: PageRequest,
    *,
    with_total: bool,
) -> Page[Agent]:
    """The agents online now that pass `filter`, paged like `agents` (Redis for who is
    online, then one PostgreSQL query for the page)."""
    require(ctx.principal, at_least=Role.VIEWER)
    online = await presence_store(ctx).online_ids(MAX_ONLINE)
    return await ctx.stores.postgres.agents.list(
        replace(filter, ids=online), order, page, with_total=with_total
    )
