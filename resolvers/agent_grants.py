"""Who may act as which agent, and the check every write made as an agent goes through.

Operators and admins grant users the right to act as an agent. A user with a grant
(and role agent) may bind a session to the agent (`login` with `agentId`), and
that session may then do what the agent may: move the agent's tasks, set its
status, keep its memories, record its metrics. Every such write checks the grant
again, so revoking one takes effect at once, whatever sessions are open.
"""

from __future__ import annotations

from uuid import UUID

from resolvers.auth import Principal, Role, require
from resolvers.context import RequestContext, Stores
from resolvers.errors import ClientError, ErrorCode
from resolvers.revocations import Revocation, announce
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.records import AgentGrant


async def grant(
    ctx: RequestContext, user_id: UUID, agent_id: UUID, *, idempotency_key: str | None = None
) -> tuple[AgentGrant, bool]:
    require(ctx.principal, at_least=Role.OPERATOR)
    return await ctx.stores.postgres.agent_grants.grant(
        ctx.write_context(idempotency_key), user_id, agent_id
    )


async def revoke(
    ctx: RequestContext, user_id: UUID, agent_id: UUID, *, idempotency_key: str | None = None
) -> bool:
    """Stop `user_id` acting as `agent_id`: its sessions bound to the agent end too."""
    require(ctx.principal, at_least=Role.OPERATOR)
    revoked = await ctx.stores.postgres.agent_grants.revoke(
        ctx.write_context(idempotency_key), user_id, agent_id
    )
    if revoked:
        if ctx.stores.sessions is not None:
            await ctx.stores.sessions.end_matching(user_id, agent_id=agent_id)
        await announce(
            ctx.stores.revocations,
            Revocation("agent grant revoked", user_id=user_id, agent_id=agent_id),
        )
    return revoked


async def list_grants(
    ctx: RequestContext,
    *,
    user_id: UUID | None,
    agent_id: UUID | None,
    page: PageRequest,
    with_total: bool,
) -> Page[AgentGrant]:
    """Operators see every grant; anyone signed in sees their own (filter by their user id)."""
    principal = ctx.principal
    if user_id is None or user_id != principal.user_id:
        require(principal, at_least=Role.OPERATOR)
    return await ctx.stores.postgres.agent_grants.list(
        user_id=user_id, agent_id=agent_id, page=page, with_total=with_total
    )


def is_operator(principal: Principal) -> bool:
    return principal.role is not None and principal.role >= Role.OPERATOR


async def require_acts_as(
    stores: Stores, principal: Principal, agent_id: UUID, *, doing: str
) -> None:
    """Let operators through; anyone else must be signed in for `agent_id` (a session
    bound to it) and still hold a grant for it. `doing` names the write in refusals."""
    if is_operator(principal):
        return
    require(principal, at_least=Role.AGENT)
    assert principal.user_id is not None
    if principal.agent_id is None:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            f"{doing} needs an operator, or a session bound to the agent: log in with"
            " `agentId` (an operator grants it with grantAgentAccess)",
        )
    if principal.agent_id != agent_id:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            f"{doing}: your session acts for agent {principal.agent_id}, not for {agent_id}",
        )
    if not await stores.postgres.agent_grants.allows(principal.user_id, agent_id):
        raise ClientError(
            ErrorCode.FORBIDDEN,
            f"{doing}: you may no longer act as agent {agent_id}; its grant was revoked",
        )


def bound_agent(principal: Principal, *, doing: str) -> UUID:
    """The agent the caller's session is bound to; anyone else is refused: claims are
    made as an agent, never on an agent's behalf. The grant is the caller's to check."""
    require(principal, at_least=Role.AGENT)
    if principal.agent_id is None:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            f"{doing} needs a session bound to an agent: log in with `agentId` (an operator"
            " grants it with grantAgentAccess)",
        )
    return principal.agent_id


def grant_revoked(agent_id: UUID, *, doing: str) -> ClientError:
    return ClientError(
        ErrorCode.FORBIDDEN,
        f"{doing}: you may no longer act as agent {agent_id}; its grant was revoked",
    )


async def require_claimer(ctx: RequestContext, *, doing: str) -> UUID:
    """The agent the caller's session is bound to (`bound_agent`), its grant checked now."""
    agent_id = bound_agent(ctx.principal, doing=doing)
    user_id = ctx.principal.user_id
    assert user_id is not None
    if not await ctx.stores.postgres.agent_grants.allows(user_id, agent_id):
        raise grant_revoked(agent_id, doing=doing)
    return agent_id
