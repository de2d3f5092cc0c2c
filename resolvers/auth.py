"""Who is asking: credentials in, a `Principal` out, and the role checks resolvers make.

Credentials, one per request:

    Authorization: Bearer <session token>     from `login`
    Authorization: ApiKey <key>               or the header  X-Api-Key: <key>

No credential is anonymous; a credential that does not check out is refused,
never downgraded to anonymous, so a client learns its token has expired.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal
from uuid import UUID

from resolvers.context import Stores
from resolvers.errors import ClientError, ErrorCode
from stores.postgres.records import SignInState
from stores.redis.records import Session


@functools.total_ordering
class Role(enum.Enum):
    """What a user may do; a higher role may do everything a lower one may."""

    VIEWER = "viewer"
    AGENT = "agent"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return _RANKS[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Role):
            return NotImplemented
        return self.rank < other.rank


_RANKS = {role: rank for rank, role in enumerate(Role)}

Via = Literal["session", "api_key", "anonymous"]


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller of one request or WebSocket connection."""

    user_id: UUID | None
    role: Role | None
    agent_id: UUID | None
    session_id: str | None
    api_key_id: UUID | None
    # What an API key was limited to at creation; empty means the role decides alone.
    scopes: frozenset[str]
    via: Via
    # When the credential stops working however it is used: a session's absolute end,
    # an API key's expiry. Long-lived connections end then.
    ends_at: datetime | None = None
    # The user's own role as the credential was checked, before the credential's cap:
    # what the user's other sessions act with is worked out from it. As fresh as
    # `role` (a role change drops the principals it covers, see resolvers/revocations.py).
    user_role: Role | None = None

    @property
    def authenticated(self) -> bool:
        return self.via != "anonymous"


ANONYMOUS = Principal(
    user_id=None,
    role=None,
    agent_id=None,
    session_id=None,
    api_key_id=None,
    scopes=frozenset(),
    via="anonymous",
)

_SIGN_IN = "send `Authorization: Bearer <session token>` or an API key in `X-Api-Key`"


def require(principal: Principal, *, at_least: Role) -> None:
    """Refuse a caller whose role is below `at_least`, or who did not sign in at all."""
    if principal.role is None:
        raise ClientError(ErrorCode.UNAUTHENTICATED, f"Sign in first: {_SIGN_IN}.")
    if principal.role < at_least:
        raise ClientError(
            ErrorCode.FORBIDDEN,
            f"This operation needs role {at_least.value}; you are {principal.role.value}.",
        )


async def authenticate(
    stores: Stores, authorization: str | None, api_key_header: str | None
) -> Principal:
    """The principal the request's credentials prove.

    Raises `ClientError(UNAUTHENTICATED)` for a credential that is malformed,
    unknown, expired or revoked; store outages surface as `StoreUnavailable`.
    """
    authorization = (authorization or "").strip()
    api_key_header = (api_key_header or "").strip()
    if authorization and api_key_header:
        raise _refused("Send one credential, not both `Authorization` and `X-Api-Key`.")
    if api_key_header:
        return await _by_api_key(stores, api_key_header)
    if not authorization:
        return ANONYMOUS
    scheme, _, credential = authorization.partition(" ")
    credential = credential.strip()
    if not credential:
        raise _refused(f"The `Authorization` header has no credential; {_SIGN_IN}.")
    if scheme.lower() == "bearer":
        return await _by_session(stores, credential)
    if scheme.lower() == "apikey":
        return await _by_api_key(stores, credential)
    raise _refused(f"Unsupported authorization scheme {scheme!r}; use Bearer or ApiKey.")


async def _by_session(stores: Stores, token: str) -> Principal:
    """The session's principal, its standing checked afresh in PostgreSQL: the user's
    role now, the key that opened it still live, its agent grant still held."""
    sessions = stores.sessions
    if sessions is None:
        raise RuntimeError("no session store: pass `sessions=` to `Stores` in create_app")
    cache = stores.session_cache
    if cache is not None and (cached := cache.get(token)) is not None:
        return cached
    generation = cache.generation if cache is not None else 0
    session = await sessions.resolve(token)
    if session is None:
        raise _refused("The session token is invalid or has expired; log in again.")
    state = await stores.postgres.users.sign_in_state(
        session.user_id, session.api_key_id, session.agent_id
    )
    ended = _why_ended(state, session.agent_id)
    if ended is not None:
        # It can never be used again: spare the next request the lookups.
        await sessions.revoke(None, session.id)
        raise _refused(f"The session has ended: {ended}. Log in again.")
    assert state is not None
    principal = Principal(
        user_id=session.user_id,
        role=session_role(Role(state.role), session),
        agent_id=session.agent_id,
        session_id=session.id,
        api_key_id=session.api_key_id,
        scopes=frozenset(session.scopes or ()),
        via="session",
        ends_at=session.ends_at,
        user_role=Role(state.role),
    )
    if cache is not None:
        cache.put(token, principal, expires_at=session.expires_at, generation=generation)
    return principal


def session_role(user_role: Role, session: Session) -> Role:
    """The role a session acts with, given its user's role now."""
    if session.scopes is None:
        # A session from before sessions kept their key's scopes: its role was the cap.
        return min(user_role, Role(session.role))
    return scoped_role(user_role, session.scopes)


def _why_ended(state: SignInState | None, agent_id: UUID | None) -> str | None:
    if state is None:
        return "its user no longer exists"
    if not state.enabled:
        return "its user is disabled"
    if not state.key_live:
        return "the API key that opened it was revoked or has expired"
    if not state.may_act:
        return f"its user may no longer act as agent {agent_id}"
    return None


async def _by_api_key(stores: Stores, key: str) -> Principal:
    found = await stores.postgres.users.authenticate_api_key(key)
    if found is None:
        raise _refused("The API key is invalid, expired or revoked.")
    user, api_key = found
    return Principal(
        user_id=user.id,
        role=scoped_role(Role(user.role), api_key.scopes),
        agent_id=None,
        session_id=None,
        api_key_id=api_key.id,
        scopes=frozenset(api_key.scopes),
        via="api_key",
        ends_at=api_key.expires_at,
        user_role=Role(user.role),
    )


# An API key's scopes cap what it may do below its user's role: a `read` key of an
# admin can only read. No scopes: the role alone decides.
SCOPE_CAPS: dict[str, Role] = {
    "read": Role.VIEWER,
    "agent": Role.AGENT,
    "write": Role.OPERATOR,
    "admin": Role.ADMIN,
}


def scoped_role(role: Role, scopes: Iterable[str]) -> Role:
    caps = [SCOPE_CAPS[scope] for scope in scopes if scope in SCOPE_CAPS]
    return min(role, max(caps)) if caps else role


def scopes_within(role: Role) -> frozenset[str]:
    """The scopes a credential acting with `role` holds: every scope whose cap is at or
    below it. An unscoped key of an operator holds `read`, `agent` and `write`; a `read`
    key of an admin holds `read` alone; a session holds what the key that opened it held."""
    return frozenset(scope for scope, cap in SCOPE_CAPS.items() if cap <= role)


def require_may_mint(principal: Principal, user_role: Role, scopes: Iterable[str]) -> None:
    """Refuse a new API key (for a user of `user_role`, limited to `scopes`) that would
    hold a scope the calling credential does not: a key never mints a wider key."""
    require(principal, at_least=Role.VIEWER)
    assert principal.role is not None
    held = scopes_within(principal.role)
    wanted = scopes_within(scoped_role(user_role, scopes))
    if not wanted <= held:
        example = ", ".join(f'"{scope}"' for scope in _ordered(held))
        raise ClientError(
            ErrorCode.FORBIDDEN,
            f"This credential holds scopes {_listed(held)}; the key would hold"
            f" {_listed(wanted)}. Ask for scopes within yours, e.g. `scopes: [{example}]`.",
            field="scopes",
        )


def _ordered(scopes: Iterable[str]) -> list[str]:
    return sorted(scopes, key=lambda scope: SCOPE_CAPS[scope])


def _listed(scopes: Iterable[str]) -> str:
    return ", ".join(_ordered(scopes)) or "none"


def _refused(message: str) -> ClientError:
    return ClientError(ErrorCode.UNAUTHENTICATED, message)
