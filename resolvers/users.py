"""Users and their API keys: who may create, revoke and change them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from resolvers.auth import Principal, Role, require, require_may_mint
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.revocations import Revocation, announce
from stores.errors import NotFound
from stores.postgres.records import ApiKey, User


async def create_user(
    ctx: RequestContext,
    *,
    email: str,
    display_name: str,
    role: str,
    idempotency_key: str | None = None,
) -> User:
    require(ctx.principal, at_least=Role.ADMIN)
    return await ctx.stores.postgres.users.create_user(
        email=email,
        display_name=display_name,
        role=role,
        ctx=ctx.write_context(idempotency_key),
    )


async def create_api_key(
    ctx: RequestContext,
    user_id: UUID | None,
    *,
    name: str,
    scopes: Sequence[str],
    expires_at: datetime | None,
    idempotency_key: str | None = None,
) -> tuple[ApiKey, str | None]:
    """A new key for the caller, or (admins) for `user_id`; never wider than the
    credential that asks for it. A retry under the same idempotency key answers the
    same key with no secret (secrets are never stored)."""
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
    return await ctx.stores.postgres.users.create_api_key_once(
        owner_id,
        name=name,
        scopes=scopes,
        expires_at=expires_at,
        ctx=ctx.write_context(idempotency_key),
    )


async def revoke_api_key(
    ctx: RequestContext, key_id: UUID, *, idempotency_key: str | None = None
) -> bool:
    """Revoke one of the caller's keys or, for admins, anyone's; False if there is no
    such live key (someone else's key reads as none to non-admins, so ids cannot be
    probed). The sessions the key opened end with it, on every replica."""
    principal = ctx.principal
    require(principal, at_least=Role.VIEWER)
    assert principal.user_id is not None
    owner_id = await ctx.stores.postgres.users.revoke_api_key(
        key_id,
        owner_id=None if _is_admin(principal) else principal.user_id,
        ctx=ctx.write_context(idempotency_key),
    )
    if owner_id is None:
        return False
    if ctx.stores.sessions is not None:
        await ctx.stores.sessions.end_matching(owner_id, api_key_id=key_id)
    await announce(ctx.stores.revocations, Revocation("API key revoked", api_key_id=key_id))
    return True


async def list_api_keys(ctx: RequestContext, user_id: UUID) -> list[ApiKey]:
    """A user's keys (without secrets): for the user and admins."""
    if user_id != ctx.principal.user_id:
        require(ctx.principal, at_least=Role.ADMIN)
    return await ctx.stores.postgres.users.list_api_keys(user_id)


async def set_disabled(
    ctx: RequestContext,
    user_id: UUID,
    *,
    disabled: bool,
    idempotency_key: str | None = None,
) -> User:
    """Disable a user (its keys stop working and its sessions end, at once and on every
    replica) or enable it again. Admins only, and not themselves."""
    require(ctx.principal, at_least=Role.ADMIN)
    if disabled and user_id == ctx.principal.user_id:
        raise ClientError(
            ErrorCode.CONFLICT, "you cannot disable yourself; ask another admin", field="userId"
        )
    user, changed = await ctx.stores.postgres.users.set_disabled(
        user_id, disabled, ctx=ctx.write_context(idempotency_key)
    )
    if disabled and changed:
        if ctx.stores.sessions is not None:
            await ctx.stores.sessions.end_matching(user_id)
        await announce(ctx.stores.revocations, Revocation("user disabled", user_id=user_id))
    return user


async def set_role(
    ctx: RequestContext, user_id: UUID, role: str, *, idempotency_key: str | None = None
) -> User:
    """Change a user's role. Admins only. Its API keys act with the new role from the
    next request; its sessions within moments on every replica (their cached checks are
    dropped); its WebSocket connections close, to sign in again with it."""
    require(ctx.principal, at_least=Role.ADMIN)
    user, changed = await ctx.stores.postgres.users.set_role(
        user_id, role, ctx=ctx.write_context(idempotency_key)
    )
    if changed:
        await announce(ctx.stores.revocations, Revocation("role changed", user_id=user_id))
    return user


def _is_admin(principal: Principal) -> bool:
    return principal.role is not None and principal.role >= Role.ADMIN
