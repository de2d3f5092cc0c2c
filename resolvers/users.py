"""Users and API keys (PostgreSQL); permissions are checked by the fields that call these."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

from resolvers.context import RequestContext
from stores.postgres.records import ApiKey, User


async def list_api_keys(ctx: RequestContext, user_id: UUID) -> list[ApiKey]:
    return await ctx.stores.postgres.users.list_api_keys(user_id)


async def create_user(
    ctx: RequestContext,
    *,
    email: str,
    display_name: str,
    role: str,
    idempotency_key: str | None = None,
) -> User:
    return await ctx.stores.postgres.users.create_user(
        email=email,
        display_name=display_name,
        role=role,
        ctx=ctx.write_context(idempotency_key),
    )


async def create_api_key(
    ctx: RequestContext,
    user_id: UUID,
    *,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None,
    idempotency_key: str | None = None,
) -> tuple[ApiKey, str | None]:
    """A new key and its secret; a retry under the same idempotency key answers the
    same key with no secret (secrets are never stored)."""
    return await ctx.stores.postgres.users.create_api_key_once(
        user_id,
        name=name,
        scopes=scopes,
        expires_at=expires_at,
        ctx=ctx.write_context(idempotency_key),
    )


async def revoke_api_key(
    ctx: RequestContext, user_id: UUID, key_id: UUID, *, idempotency_key: str | None = None
) -> bool:
    return await ctx.stores.postgres.users.revoke_api_key(
        user_id, key_id, ctx=ctx.write_context(idempotency_key)
    )
