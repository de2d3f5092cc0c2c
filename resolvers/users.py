"""Users and their API keys: who may create, revoke and change them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from resolvers.auth import Role, require, require_may_mint
from resolvers.context import RequestContext
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
    assert ctx.principal.user_id is not None
    return await ctx.stores.postgres.users.revoke_api_key(
        ctx.principal.user_id, key_id, ctx=ctx.write_context()
    )
