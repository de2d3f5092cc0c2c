"""Sign-in and identity mutations: sessions (Redis), users and API keys (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import datetime
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers import audit
from resolvers import sessions as session_resolvers
from resolvers import users as user_resolvers
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from schema.enums import UserRole
from schema.idempotency import idempotency_key
from schema.relay import decode_id
from schema.sessions import Session
from schema.user_errors import UserError, attempt
from schema.users import ApiKey, User
from stores.postgres import records

Info = strawberry.Info[RequestContext, None]


@strawberry.input
class LoginInput:
    api_key: str
    agent_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Bind the session to this agent (agent-role users)."
    )


@strawberry.type
class LoginPayload:
    token: str | None = strawberry.field(
        description="Send as `Authorization: Bearer <token>`. Shown once."
    )
    session: Session | None
    user_errors: list[UserError]


@strawberry.type
class LogoutPayload:
    logged_out: bool


@strawberry.input
class RevokeSessionInput:
    session_id: strawberry.ID
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class RevokePayload:
    revoked: bool
    user_errors: list[UserError]


@strawberry.input
class CreateUserInput:
    email: str
    role: UserRole
    display_name: str = ""
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class UserPayload:
    user: User | None
    user_errors: list[UserError]


@strawberry.input
class CreateApiKeyInput:
    name: str = ""
    scopes: list[str] = strawberry.field(default_factory=list)
    expires_at: datetime | None = None
    user_id: relay.GlobalID | None = strawberry.field(
        default=None, description="Another user's id (admins only); yourself by default."
    )
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class ApiKeyPayload:
    api_key: ApiKey | None
    secret: str | None = strawberry.field(
        description="The key itself. Shown once, never again: null when this answer replays "
        "an earlier call with the same idempotencyKey (revoke that key if its secret was lost)."
    )
    user_errors: list[UserError]


@strawberry.input
class RevokeApiKeyInput:
    id: strawberry.ID
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class UserIdInput:
    user_id: relay.GlobalID
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class SetUserRoleInput:
    user_id: relay.GlobalID
    role: UserRole
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class UserMutations:
    @strawberry.mutation(description="Trade an API key for a session token.")
    async def login(self, info: Info, input: LoginInput) -> LoginPayload:
        ctx = info.context

        async def run() -> tuple[Session, str]:
            agent_id = (
                decode_id(input.agent_id, "Agent", field="agentId") if input.agent_id else None
            )
            session, token = await session_resolvers.login(
                ctx.stores, input.api_key, agent_id=agent_id, ttl_s=ctx.session_ttl_s
            )
            # Signed in just now, so the actor is the session's user, not the (anonymous) caller.
            signed_in = replace(ctx.write_context(), actor_id=session.user_id)
            await audit.record(ctx, "session.login", "session", session.id, write=signed_in)
            return Session.from_record(session), token

        outcome, errors = await attempt(run())
        if outcome is None:
            return LoginPayload(token=None, session=None, user_errors=errors)
        return LoginPayload(token=outcome[1], session=outcome[0], user_errors=errors)

    @strawberry.mutation(description="End the session whose bearer token signed this request.")
    async def logout(self, info: Info) -> LogoutPayload:
        ctx = info.context
        authorization = ctx.connection.headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise ClientError(
                ErrorCode.UNAUTHENTICATED, "logout needs `Authorization: Bearer <session token>`"
            )
        logged_out = await session_resolvers.logout(
            ctx.stores, token.strip(), session_id=ctx.principal.session_id
        )
        if logged_out:
            await audit.record(ctx, "session.logout", "session", ctx.principal.session_id)
        return LogoutPayload(logged_out=logged_out)

    @strawberry.mutation(description="End one of your sessions (admins: anyone's).")
    async def revoke_session(self, info: Info, input: RevokeSessionInput) -> RevokePayload:
        ctx = info.context
        revoked, errors = await attempt(
            session_resolvers.revoke_session_once(
                ctx, str(input.session_id), idempotency_key=input.idempotency_key
            )
        )
        return RevokePayload(revoked=bool(revoked), user_errors=errors)

    @strawberry.mutation(description="Create a user. Admins only.")
    async def create_user(self, info: Info, input: CreateUserInput) -> UserPayload:
        ctx = info.context

        async def run() -> User:
            user = await user_resolvers.create_user(
                ctx,
                email=input.email,
                display_name=input.display_name,
                role=input.role.value,
                idempotency_key=input.idempotency_key,
            )
            return User.from_record(user)

        user, errors = await attempt(run())
        return UserPayload(user=user, user_errors=errors)

    @strawberry.mutation(description="Create an API key; its secret is in the payload, once.")
    async def create_api_key(self, info: Info, input: CreateApiKeyInput) -> ApiKeyPayload:
        ctx = info.context

        async def run() -> tuple[ApiKey, str | None]:
            user_id = decode_id(input.user_id, "User", field="userId") if input.user_id else None
            key, secret = await user_resolvers.create_api_key(
                ctx,
                user_id,
                name=input.name,
                scopes=input.scopes,
                expires_at=input.expires_at,
                idempotency_key=input.idempotency_key,
            )
            return ApiKey.from_record(key), secret

        outcome, errors = await attempt(run())
        if outcome is None:
            return ApiKeyPayload(api_key=None, secret=None, user_errors=errors)
        return ApiKeyPayload(api_key=outcome[0], secret=outcome[1], user_errors=errors)

    @strawberry.mutation(
        description="Revoke one of your API keys (admins: anyone's); the sessions it opened "
        "end with it."
    )
    async def revoke_api_key(self, info: Info, input: RevokeApiKeyInput) -> RevokePayload:
        ctx = info.context

        async def run() -> bool:
            try:
                key_id = UUID(str(input.id))
            except ValueError:
                raise ClientError(
                    ErrorCode.BAD_USER_INPUT, "not an API key id", field="id"
                ) from None
            return await user_resolvers.revoke_api_key(
                ctx, key_id, idempotency_key=input.idempotency_key
            )

        revoked, errors = await attempt(run())
        return RevokePayload(revoked=bool(revoked), user_errors=errors)

    @strawberry.mutation(
        description="Disable a user: its keys stop working and its sessions and connections "
        "end, at once. Admins only (not themselves, not the last admin); audited."
    )
    async def disable_user(self, info: Info, input: UserIdInput) -> UserPayload:
        return await _user_change(
            lambda user_id: user_resolvers.set_disabled(
                info.context, user_id, disabled=True, idempotency_key=input.idempotency_key
            ),
            input.user_id,
        )

    @strawberry.mutation(
        description="Enable a disabled user: its keys work again (its sessions do not come "
        "back). Admins only; audited."
    )
    async def enable_user(self, info: Info, input: UserIdInput) -> UserPayload:
        return await _user_change(
            lambda user_id: user_resolvers.set_disabled(
                info.context, user_id, disabled=False, idempotency_key=input.idempotency_key
            ),
            input.user_id,
        )

    @strawberry.mutation(
        description="Change a user's role; its keys and live sessions act with it within "
        "moments, on every replica. Admins only (not demoting the last admin); audited."
    )
    async def set_user_role(self, info: Info, input: SetUserRoleInput) -> UserPayload:
        return await _user_change(
            lambda user_id: user_resolvers.set_role(
                info.context, user_id, input.role.value, idempotency_key=input.idempotency_key
            ),
            input.user_id,
        )


async def _user_change(
    change: Callable[[UUID], Awaitable[records.User]], user_id: relay.GlobalID
) -> UserPayload:
    async def run() -> User:
        return User.from_record(await change(decode_id(user_id, "User", field="userId")))

    user, errors = await attempt(run())
    return UserPayload(user=user, user_errors=errors)
