"""Users and their API keys.

A key reads `pg_<prefix>_<secret>`: the prefix (8 characters) is kept in clear so
people can tell their keys apart; of the secret only a SHA-256 of the whole key
is kept, so the key is shown once, when it is created.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

import asyncpg

from stores._secrets import digest
from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres.options import PgConnection
from stores.postgres.records import ApiKey, SignInState, User, WriteContext
from stores.postgres.writes import claim_idempotency_key, settle_idempotency_key, write_audit

if TYPE_CHECKING:
    from asyncpg import Record

    from stores.postgres.options import PgConnection
    from stores.postgres.store import PostgresStore

USER_ROLES = ("admin", "operator", "agent", "viewer")
KEY_PREFIX = "pg_"
_PREFIX_ALPHABET = string.ascii_lowercase + string.digits
_PREFIX_LENGTH = 8
_SECRET_BYTES = 32  # 43 characters of urlsafe base64
_KEY_LENGTH = len(KEY_PREFIX) + _PREFIX_LENGTH + 1 + 43

# Recording every use would turn each authenticated read into a write.
DEFAULT_LAST_USED_RESOLUTION = timedelta(minutes=1)

_USER_COLUMNS = "id, email, display_name, role, created_at, disabled_at"
_KEY_COLUMNS = "id, user_id, name, prefix, scopes, expires_at, last_used_at, revoked_at, created_at"


# What a key may be limited to (resolvers/auth.py maps each to the highest role it allows).
API_KEY_SCOPES = ("read", "agent", "write", "admin")


class UserRepository:
    """Users and API keys in PostgreSQL; reached as `PostgresStore.users`."""

    __slots__ = ("_last_used_resolution", "_store")

    def __init__(
        self,
        store: PostgresStore,
        *,
        last_used_resolution: timedelta = DEFAULT_LAST_USED_RESOLUTION,
    ) -> None:
        self._store = store
        self._last_used_resolution = last_used_resolution

    async def create_user(
        self, *, email: str, display_name: str = "", role: str, ctx: WriteContext | None = None
    ) -> User:
        """A new user; with `ctx`, audited in the same transaction, and a retry under
        the same `ctx.idempotency_key` gets the first call's user."""
        email = _normalise_email(email)
        if role not in USER_ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(USER_ROLES)}; got {role!r}")
        if len(display_name) > 200:
            raise InvalidInput("display_name", "must be at most 200 characters")
        user_id = uuid4()
        async with self._store.connection() as conn, conn.transaction():
            if ctx is not None:
                replay = await claim_idempotency_key(conn, ctx, "user.create", {"id": str(user_id)})
                if replay is not None:
                    return await _get_user(conn, UUID(replay["id"]))
            try:
                row = await conn.fetchrow(
                    "INSERT INTO users (id, email, display_name, role) VALUES ($1, $2, $3, $4)"
                    f" RETURNING {_USER_COLUMNS}",
                    user_id,
                    email,
                    display_name,
                    role,
                )
            except asyncpg.UniqueViolationError as exc:
                raise Conflict(f"a user with email {email} already exists", field="email") from exc
            assert row is not None
            user = _user(row)
            if ctx is not None:
                new = {"email": user.email, "role": user.role, "display_name": user.display_name}
                await write_audit(conn, ctx, "user.create", "user", user.id, None, new)
        return user

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, User]:
        if not ids:
            return {}
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_USER_COLUMNS} FROM users WHERE id = ANY($1::uuid[])", list(ids)
            )
        return {row["id"]: _user(row) for row in rows}

    async def by_email(self, email: str) -> User | None:
        async with self._store.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_USER_COLUMNS} FROM users WHERE email = $1", email.strip().lower()
            )
        return _user(row) if row is not None else None

    async def create_api_key(
        self,
        user_id: UUID,
        *,
        name: str = "",
        scopes: Iterable[str] = (),
        expires_at: datetime | None = None,
        ctx: WriteContext | None = None,
    ) -> tuple[ApiKey, str]:
        """A new key for `user_id`: its record, and the key itself, which is not kept.
        With `ctx`, audited (without the secret) in the same transaction."""
        if ctx is not None and ctx.idempotency_key is not None:
            raise ValueError("a retried call may get no secret: use create_api_key_once")
        api_key, secret = await self.create_api_key_once(
            user_id, name=name, scopes=scopes, expires_at=expires_at, ctx=ctx
        )
        assert secret is not None
        return api_key, secret

    async def create_api_key_once(
        self,
        user_id: UUID,
        *,
        name: str = "",
        scopes: Iterable[str] = (),
        expires_at: datetime | None = None,
        ctx: WriteContext | None = None,
    ) -> tuple[ApiKey, str | None]:
        """As `create_api_key`; a retry under the same `ctx.idempotency_key` gets the
        first call's key record and None for the secret, which is never kept."""
        if len(name) > 200:
            raise InvalidInput("name", "must be at most 200 characters")
        scope_list = _validate_scopes(scopes)
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise InvalidInput("expires_at", "must carry a time zone")
            if expires_at <= datetime.now(UTC):
                raise InvalidInput("expires_at", "must be in the future")
        prefix = "".join(secrets.choice(_PREFIX_ALPHABET) for _ in range(_PREFIX_LENGTH))
        key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(_SECRET_BYTES)}"
        key_id = uuid4()
        async with self._store.connection() as conn, conn.transaction():
            if ctx is not None:
                operation = f"api_key.create {user_id}"
                replay = await claim_idempotency_key(conn, ctx, operation, {"id": str(key_id)})
                if replay is not None:
                    row = await conn.fetchrow(
                        f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE id = $1", UUID(replay["id"])
                    )
                    if row is None:
                        raise NotFound("api key", replay["id"], field="idempotencyKey")
                    return _api_key(row), None
            try:
                row = await conn.fetchrow(
                    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, scopes,"
                    f" expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {_KEY_COLUMNS}",
                    key_id,
                    user_id,
                    name,
                    prefix,
                    digest(key),
                    scope_list,
                    expires_at,
                )
            except asyncpg.ForeignKeyViolationError as exc:
                raise NotFound("user", user_id, field="user_id") from exc
            assert row is not None
            api_key = _api_key(row)
            if ctx is not None:
                new = {
                    "user_id": str(user_id),
                    "name": name,
                    "prefix": prefix,
                    "scopes": scope_list,
                }
                await write_audit(conn, ctx, "api_key.create", "api_key", api_key.id, None, new)
        return api_key, key

    async def authenticate_api_key(self, key: str) -> tuple[User, ApiKey] | None:
        """The user and key that `key` proves, or None if it is unknown, revoked or expired.

        Lookup is by the key's hash, so response time says nothing about how much
        of a guess matched. `last_used_at` moves at most once per
        `last_used_resolution` (a minute), in the same statement as the lookup.
        """
        if len(key) != _KEY_LENGTH or not key.startswith(KEY_PREFIX):
            return None
        async with self._store.connection() as conn:
            row = await conn.fetchrow(
                """
                WITH found AS (
                    SELECT k.id, k.user_id, k.name, k.prefix, k.scopes, k.expires_at,
                           k.last_used_at, k.revoked_at, k.created_at,
                           u.email, u.display_name, u.role, u.created_at AS user_created_at
                    FROM api_keys k JOIN users u ON u.id = k.user_id
                    WHERE k.key_hash = $1
                      AND u.disabled_at IS NULL
                      AND k.revoked_at IS NULL
                      AND (k.expires_at IS NULL OR k.expires_at > now())
                ), touched AS (
                    UPDATE api_keys SET last_used_at = now()
                    WHERE id = (SELECT id FROM found)
                      AND (last_used_at IS NULL OR last_used_at <= now() - $2::interval)
                    RETURNING last_used_at
                )
                SELECT found.*, (SELECT last_used_at FROM touched) AS touched_at FROM found
                """,
                digest(key),
                self._last_used_resolution,
            )
        if row is None:
            return None
        user = User(
            id=row["user_id"],
            email=row["email"],
            display_name=row["display_name"],
            role=row["role"],
            created_at=row["user_created_at"],
        )
        return user, _api_key(row, last_used_at=row["touched_at"])

    async def sign_in_state(
        self, user_id: UUID, api_key_id: UUID | None, agent_id: UUID | None
    ) -> SignInState | None:
        """The user's role now, whether `api_key_id` (if given) is still live, and whether
        the user may still act as `agent_id` (if given); None if the user is gone."""
        async with self._store.connection() as conn:
            row = await conn.fetchrow(
                """
                SELECT u.role, u.disabled_at IS NULL AS enabled,
                       $2::uuid IS NULL OR EXISTS (
                           SELECT FROM api_keys k
                           WHERE k.id = $2 AND k.user_id = u.id AND k.revoked_at IS NULL
                             AND (k.expires_at IS NULL OR k.expires_at > now())
                       ) AS key_live,
                       $3::uuid IS NULL OR EXISTS (
                           SELECT FROM agent_grants g WHERE g.user_id = u.id AND g.agent_id = $3
                       ) AS may_act
                FROM users u WHERE u.id = $1
                """,
                user_id,
                api_key_id,
                agent_id,
            )
        if row is None:
            return None
        return SignInState(
            role=row["role"],
            enabled=row["enabled"],
            key_live=row["key_live"],
            may_act=row["may_act"],
        )

    async def list_api_keys(self, user_id: UUID) -> list[ApiKey]:
        """Every key of `user_id`, revoked and expired ones included, newest first."""
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE user_id = $1"
                " ORDER BY created_at DESC, id",
                user_id,
            )
        return [_api_key(row) for row in rows]

    async def revoke_api_key(
        self, key_id: UUID, *, owner_id: UUID | None, ctx: WriteContext | None = None
    ) -> UUID | None:
        """Revoke a key of `owner_id` (None: of anyone); its owner's id, or None if there
        is no such live key. A retry under the same `ctx.idempotency_key` gets the first
        call's answer."""
        async with self._store.connection() as conn, conn.transaction():
            if ctx is not None:
                operation = f"api_key.revoke {key_id}"
                replay = await claim_idempotency_key(conn, ctx, operation, {"owner_id": None})
                if replay is not None:
                    replayed = replay.get("owner_id")
                    return UUID(replayed) if replayed else None
            owner: UUID | None = await conn.fetchval(
                "UPDATE api_keys SET revoked_at = now()"
                " WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2) AND revoked_at IS NULL"
                " RETURNING user_id",
                key_id,
                owner_id,
            )
            if owner is not None and ctx is not None:
                new = {"user_id": str(owner), "revoked": True}
                await write_audit(conn, ctx, "api_key.revoke", "api_key", key_id, None, new)
            if ctx is not None:
                answer = {"owner_id": None if owner is None else str(owner)}
                await settle_idempotency_key(conn, ctx, answer)
        return owner

    async def set_disabled(
        self, user_id: UUID, disabled: bool, *, ctx: WriteContext
    ) -> tuple[User, bool]:
        """Disable or enable a user, audited; the user, and False if it already was.
        Refuses (CONFLICT) to disable the last enabled admin, so that someone can
        always manage users."""
        async with self._store.connection() as conn, conn.transaction():
            action = "user.disable" if disabled else "user.enable"
            replay = await claim_idempotency_key(
                conn, ctx, f"{action} {user_id}", {"changed": False}
            )
            if replay is not None:
                return await _get_user(conn, user_id), bool(replay["changed"])
            user = await _locked(conn, user_id)
            if (user.disabled_at is not None) == disabled:
                return user, False
            if disabled and user.role == "admin":
                await _keep_an_admin(conn, user_id, "disable")
            row = await conn.fetchrow(
                "UPDATE users SET disabled_at = CASE WHEN $2 THEN now() END WHERE id = $1"
                f" RETURNING {_USER_COLUMNS}",
                user_id,
                disabled,
            )
            assert row is not None
            changed = _user(row)
            await settle_idempotency_key(conn, ctx, {"changed": True})
            await write_audit(
                conn,
                ctx,
                action,
                "user",
                user_id,
                {"disabled_at": user.disabled_at},
                {"disabled_at": changed.disabled_at},
            )
        return changed, True

    async def set_role(self, user_id: UUID, role: str, *, ctx: WriteContext) -> tuple[User, bool]:
        """Change a user's role, audited; the user, and False if it already had the role.
        Refuses (CONFLICT) to demote the last enabled admin."""
        if role not in USER_ROLES:
            raise InvalidInput("role", f"must be one of {', '.join(USER_ROLES)}; got {role!r}")
        async with self._store.connection() as conn, conn.transaction():
            replay = await claim_idempotency_key(
                conn, ctx, f"user.role {user_id} {role}", {"changed": False}
            )
            if replay is not None:
                return await _get_user(conn, user_id), bool(replay["changed"])
            user = await _locked(conn, user_id)
            if user.role == role:
                return user, False
            if user.role == "admin" and user.disabled_at is None:
                await _keep_an_admin(conn, user_id, "demote")
            row = await conn.fetchrow(
                f"UPDATE users SET role = $2 WHERE id = $1 RETURNING {_USER_COLUMNS}",
                user_id,
                role,
            )
            assert row is not None
            changed = _user(row)
            await settle_idempotency_key(conn, ctx, {"changed": True})
            await write_audit(
                conn, ctx, "user.role", "user", user_id, {"role": user.role}, {"role": role}
            )
        return changed, True


async def _locked(conn: PgConnection, user_id: UUID) -> User:
    row = await conn.fetchrow(
        f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1 FOR UPDATE", user_id
    )
    if row is None:
        raise NotFound("user", user_id, field="userId")
    return _user(row)


async def _keep_an_admin(conn: PgConnection, user_id: UUID, doing: str) -> None:
    # Locking every enabled admin serialises two admins disabling each other at once.
    others = await conn.fetch(
        "SELECT id FROM users WHERE role = 'admin' AND disabled_at IS NULL AND id <> $1 FOR UPDATE",
        user_id,
    )
    if not others:
        raise Conflict(
            f"cannot {doing} the last enabled admin; make another user admin first",
            field="userId",
        )


def _normalise_email(email: str) -> str:
    # Mail systems treat addresses case-insensitively in practice; one account per address.
    email = email.strip().lower()
    local, at, domain = email.partition("@")
    if not (local and at and domain) or len(email) > 320 or any(ch.isspace() for ch in email):
        raise InvalidInput("email", f"{email!r} is not an email address")
    return email


def _validate_scopes(scopes: Iterable[str]) -> list[str]:
    unique = list(dict.fromkeys(scopes))
    for scope in unique:
        if scope not in API_KEY_SCOPES:
            raise InvalidInput(
                "scopes", f"{scope!r} is not a scope; use any of {', '.join(API_KEY_SCOPES)}"
            )
    return unique


async def _get_user(conn: PgConnection, user_id: UUID) -> User:
    row = await conn.fetchrow(f"SELECT {_USER_COLUMNS} FROM users WHERE id = $1", user_id)
    if row is None:
        raise NotFound("user", user_id, field="idempotencyKey")
    return _user(row)


def _user(row: Record) -> User:
    return User(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        role=row["role"],
        created_at=row["created_at"],
        disabled_at=row["disabled_at"],
    )


def _api_key(row: Record, *, last_used_at: datetime | None = None) -> ApiKey:
    return ApiKey(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        scopes=tuple(row["scopes"]),
        expires_at=row["expires_at"],
        last_used_at=last_used_at or row["last_used_at"],
        revoked_at=row["revoked_at"],
        created_at=row["created_at"],
    )
