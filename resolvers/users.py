"""Users and their API keys: who may create, revoke and change them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from resolvers.auth import Role, require, require_may_mint
from resolvers.context import RequestContext
from resolvers.revocations import Revocation, announce
from stores.errors import NotFound
from stores.postgres.records import ApiKey, User


async def create_user(ctx: RequestContext, *, email: str, display_name: str, role: str) -> User:
    require(ctx.principal, at_least=Role.ADMIN)
    return await ctx.stores.postgres.users.create_user(
        email=email, display_name=display_name, role=role, ctx=ctx.write_context()
    )


async def create_api_key(
    ctx: RequestContext,
    user_id: UUID | None,
    *,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None,
) -> tuple[ApiKey, str]:
    """A new key for the caller, or (admins) for `user_id`; never wider than the
    credential that asks for it."""
    principal = ctx.principal
    require(principal, at_least=Role.VIEWER)
    assert principal.user_id is not None
    owner_id = user_id or principal.user_id
    if owner_id != principal.user_id:
        require(principal, at_least=Role.ADMIN)
    owner = await ctx.loaders.user_by_id.load(owner_id)
    if owner is None:
        raise NotFound("user", owner_id, field="userId")
    require_may_mint(principal, Role(owner.role), scopes)
    return await ctx.stores.postgres.users.create_api_key(
        owner_id, name=name, scopes=scopes, expires_at=expires_at, ctx=ctx.write_context()
    )


async def revoke_api_key(ctx: RequestContext, key_id: UUID) -> bool:
    """Revoke one of the caller's keys; False if it has no such key, or it was revoked."""
    require(ctx.principal, at_least=Role.VIEWER)
    owner_id = ctx.principal.user_id
    assert owner_id is not None
    revoked = await ctx.stores.postgres.users.revoke_api_key(
        owner_id, key_id, ctx=ctx.write_context()
    )
    if revoked:
        # The key's sessions end with it, and every replica closes their connections.
        if ctx.stores.sessions is not None:
            await ctx.stores.sessions.end_matching(owner_id, api_key_id=key_id)
        await announce(ctx.stores.revocations, Revocation("API key revoked", api_key_id=key_id))
    return revoked
