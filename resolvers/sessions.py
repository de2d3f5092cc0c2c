"""Logging in and out, and managing one's sessions; the GraphQL fields call these.

A session is opened with an API key and then used as a Bearer token, so that
the long-lived key is sent once rather than with every request.
"""

from __future__ import annotations

from uuid import UUID

from resolvers.auth import Principal, Role, require, scoped_role, session_role
from resolvers.context import RequestContext, Stores
from resolvers.errors import ClientError, ErrorCode
from resolvers.revocations import Revocation, announce
from stores.errors import InvalidInput
from stores.postgres.options import PgConnection
from stores.postgres.records import JSON
from stores.postgres.writes import run_once, write_audit
from stores.redis.records import Session
from stores.redis.sessions import SessionStore


async def login(
    stores: Stores, api_key: str, *, agent_id: UUID | None = None, ttl_s: int
) -> tuple[Session, str]:
    """A new session for the key's user, and its token (shown this once).

    Only users with the agent role, and a grant for the agent, may bind the
    session to an agent: the session then acts for that agent.
    """
    found = await stores.postgres.users.authenticate_api_key(api_key)
    if found is None:
        raise ClientError(ErrorCode.UNAUTHENTICATED, "The API key is invalid, expired or revoked.")
    user, key_record = found
    if agent_id is not None:
        if user.role != Role.AGENT.value:
            raise ClientError(
                ErrorCode.FORBIDDEN,
                f"Only users with role agent may bind a session to an agent; you are {user.role}.",
                field="agentId",
            )
        if not await stores.postgres.agent_grants.allows(user.id, agent_id):
            raise ClientError(
                ErrorCode.FORBIDDEN,
                f"You may not act as agent {agent_id}: an operator grants it with"
                " grantAgentAccess.",
                field="agentId",
            )
    try:
        return await _sessions(stores).create(
            # The session keeps the key's scopes, so logging in never widens a key; and
            # the key's id, so revoking the key ends it.
            user_id=user.id,
            role=scoped_role(Role(user.role), key_record.scopes).value,
            agent_id=agent_id,
            ttl_s=ttl_s,
            api_key_id=key_record.id,
            scopes=key_record.scopes,
        )
    except InvalidInput as exc:
        raise ClientError(ErrorCode.BAD_USER_INPUT, exc.message, field=exc.field) from exc


async def logout(stores: Stores, token: str, *, session_id: str | None = None) -> bool:
    """End the session `token` proves (`session_id`: its id, to close its connections
    on every replica); False if it had already ended."""
    logged_out = await _sessions(stores).delete(token)
    if session_id is not None:
        await announce(stores.revocations, Revocation("logged out", session_id=session_id))
    return logged_out


async def list_sessions(stores: Stores, principal: Principal) -> list[Session]:
    """The caller's own live sessions, oldest first."""
    require(principal, at_least=Role.VIEWER)
    assert principal.user_id is not None
    return await _sessions(stores).list_for_user(principal.user_id)


async def revoke_session(stores: Stores, principal: Principal, session_id: str) -> bool:
    """End a session by its id: one of one's own or, for admins, anyone's.

    False if there is no such live session; someone else's session reads as none,
    so ids cannot be probed.
    """
    require(principal, at_least=Role.VIEWER)
    assert principal.user_id is not None
    owner = None if principal.role is Role.ADMIN else principal.user_id
    revoked = await _sessions(stores).revoke(owner, session_id)
    if revoked:
        await announce(stores.revocations, Revocation("session revoked", session_id=session_id))
    return revoked


async def current_role(ctx: RequestContext, session: Session) -> Role:
    """The role `session` acts with now (as `authenticate` computes it)."""
    principal = ctx.principal
    if principal.user_role is not None and principal.user_id == session.user_id:
        # One's own session: the caller's credential was checked against the same user
        # row, and as recently as every permission check of this request relies on.
        return session_role(principal.user_role, session)
    user = await ctx.loaders.user_by_id.load(session.user_id)
    if user is None:
        return Role(session.role)
    return session_role(Role(user.role), session)


async def revoke_session_once(
    ctx: RequestContext, session_id: str, *, idempotency_key: str | None
) -> bool:
    """`revoke_session` for a request: audited, and a retry under the same key gets the
    first call's answer (the session lives in Redis; the key and audit row in PostgreSQL)."""
    require(ctx.principal, at_least=Role.VIEWER)
    write = ctx.write_context(idempotency_key)

    async def revoke(conn: PgConnection) -> JSON:
        revoked = await revoke_session(ctx.stores, ctx.principal, session_id)
        if revoked:
            await write_audit(conn, write, "session.revoke", "session", session_id, None, None)
        return {"revoked": revoked}

    answer = await run_once(ctx.stores.postgres, write, f"session.revoke {session_id}", revoke)
    return bool(answer["revoked"])


def _sessions(stores: Stores) -> SessionStore:
    if stores.sessions is None:
        # A wiring mistake, not the client's: masked as INTERNAL like any other bug.
        raise RuntimeError("no session store: pass `sessions=` to `Stores` in create_app")
    return stores.sessions
