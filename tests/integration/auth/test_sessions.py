"""Sessions against a real Redis, and the login/logout functions over them."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from datetime import timedelta

import pytest

from gateway.settings import Settings
from resolvers.auth import ANONYMOUS, Principal, Role, authenticate
from resolvers.context import Stores
from resolvers.errors import ClientError, ErrorCode
from resolvers.sessions import list_sessions, login, logout, revoke_session
from stores import GraphStore, PostgresStore, RedisStore, roundtrips
from stores.errors import InvalidInput
from stores.postgres import UserRepository
from stores.redis.sessions import (
    AGENT_INDEX,
    SESSION_ID_KEY,
    SESSION_KEY,
    USER_INDEX,
    SessionOptions,
    SessionStore,
)
from tests.integration.auth.conftest import unique_email
from tests.integration.stores import new_agent, new_ctx
from tests.support.waiting import until


async def test_create_and_resolve(sessions: SessionStore, redis: RedisStore) -> None:
    user_id, agent_id = uuid.uuid4(), uuid.uuid4()
    session, token = await sessions.create(
        user_id=user_id, role="agent", agent_id=agent_id, ttl_s=60
    )
    assert len(token) == 43
    assert session.id != token
    assert (session.user_id, session.role, session.agent_id) == (user_id, "agent", agent_id)
    assert session.created_at == session.last_seen_at
    assert (session.expires_at - session.created_at).total_seconds() == 60

    assert await sessions.resolve(token) == session
    assert await sessions.resolve("not-a-token") is None
    assert await sessions.resolve("") is None

    # Redis holds the token's hash, never the token.
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    assert await redis.client.exists(SESSION_KEY + token_hash) == 1
    async for key in redis.client.scan_iter(match="{sessions}*"):
        assert token.encode() not in key
        if await redis.client.type(key) == b"hash":
            values = await redis.client.hvals(key)
            assert all(token.encode() not in value for value in values if isinstance(value, bytes))
    for key in (SESSION_KEY + token_hash, SESSION_ID_KEY + session.id):
        assert 55_000 < await redis.client.pttl(key) <= 60_000


async def test_expiry_slides_with_use_but_not_more_often_than_the_interval(
    redis: RedisStore,
) -> None:
    sessions = SessionStore(redis, SessionOptions(touch_interval=0.3))
    session, token = await sessions.create(
        user_id=uuid.uuid4(), role="viewer", agent_id=None, ttl_s=1
    )

    with roundtrips.counting() as counter:
        unchanged = await sessions.resolve(token)
    assert counter["redis"] == 1
    assert unchanged is not None and unchanged.expires_at == session.expires_at

    # Used every 0.6 s, a 1 s session outlives its first second...
    touched = session
    for _ in range(3):
        await asyncio.sleep(0.6)
        resolved = await sessions.resolve(token)
        assert resolved is not None
        touched = resolved
        assert touched.expires_at > session.expires_at
        assert touched.expires_at == touched.last_seen_at + timedelta(seconds=1)
    (listed,) = await sessions.list_for_user(session.user_id)
    assert listed.expires_at == touched.expires_at
    assert await redis.client.exists(SESSION_ID_KEY + session.id) == 1

    # ...and ends a second after its last use.
    await asyncio.sleep(1.2)
    assert await sessions.resolve(token) is None


async def test_sessions_expire_by_ttl_and_leave_the_indexes(
    sessions: SessionStore, redis: RedisStore
) -> None:
    user_id, agent_id = uuid.uuid4(), uuid.uuid4()
    _, token = await sessions.create(user_id=user_id, role="agent", agent_id=agent_id, ttl_s=1)
    assert len(await sessions.list_for_user(user_id)) == 1

    await asyncio.sleep(1.2)
    assert await sessions.resolve(token) is None
    assert await sessions.list_for_user(user_id) == []
    assert await sessions.for_agents([agent_id]) == {agent_id: []}
    assert await redis.client.zcard(f"{USER_INDEX}{user_id}") == 0
    assert await redis.client.zcard(f"{AGENT_INDEX}{agent_id}") == 0


async def test_logout(sessions: SessionStore) -> None:
    user_id = uuid.uuid4()
    _, token = await sessions.create(user_id=user_id, role="viewer", agent_id=None, ttl_s=60)
    kept, _ = await sessions.create(user_id=user_id, role="viewer", agent_id=None, ttl_s=60)

    assert await sessions.delete(token) is True
    assert await sessions.resolve(token) is None
    assert await sessions.delete(token) is False
    assert [s.id for s in await sessions.list_for_user(user_id)] == [kept.id]


async def test_list_for_user_oldest_first(sessions: SessionStore) -> None:
    user_id = uuid.uuid4()
    first, _ = await sessions.create(user_id=user_id, role="viewer", agent_id=None, ttl_s=60)
    await asyncio.sleep(0.01)  # creation times are in ms
    second, _ = await sessions.create(user_id=user_id, role="viewer", agent_id=None, ttl_s=30)
    await sessions.create(user_id=uuid.uuid4(), role="viewer", agent_id=None, ttl_s=60)
    assert await sessions.list_for_user(user_id) == [first, second]
    assert await sessions.list_for_user(uuid.uuid4()) == []


async def test_revoke_only_the_owners_session(sessions: SessionStore) -> None:
    owner, stranger = uuid.uuid4(), uuid.uuid4()
    session, token = await sessions.create(user_id=owner, role="viewer", agent_id=None, ttl_s=60)

    assert await sessions.revoke(stranger, session.id) is False
    assert await sessions.resolve(token) is not None
    assert await sessions.revoke(owner, session.id) is True
    assert await sessions.resolve(token) is None
    assert await sessions.revoke(owner, session.id) is False
    assert await sessions.list_for_user(owner) == []


async def test_revoke_by_id_alone(sessions: SessionStore, redis: RedisStore) -> None:
    agent_id = uuid.uuid4()
    session, token = await sessions.create(
        user_id=uuid.uuid4(), role="agent", agent_id=agent_id, ttl_s=60
    )
    assert await sessions.revoke(None, session.id) is True
    assert await sessions.resolve(token) is None
    assert await sessions.for_agents([agent_id]) == {agent_id: []}
    assert await redis.client.exists(SESSION_ID_KEY + session.id) == 0
    assert await sessions.revoke(None, "no-such-session") is False


async def test_for_agents_is_one_round_trip(sessions: SessionStore) -> None:
    agents = [uuid.uuid4() for _ in range(20)]
    expected: dict[uuid.UUID, set[str]] = {agent_id: set() for agent_id in agents}
    for index, agent_id in enumerate(agents[:15]):
        for _ in range(1 + index % 3):
            session, _ = await sessions.create(
                user_id=uuid.uuid4(), role="agent", agent_id=agent_id, ttl_s=60
            )
            expected[agent_id].add(session.id)

    with roundtrips.counting() as counter:
        found = await sessions.for_agents([*agents, agents[0]])
    assert counter["redis"] == 1
    assert {agent_id: {s.id for s in found[agent_id]} for agent_id in agents} == expected
    assert await sessions.for_agents([]) == {}


async def test_a_session_ends_at_its_lifetime_however_much_it_is_used(
    redis: RedisStore,
) -> None:
    sessions = SessionStore(redis, SessionOptions(touch_interval=0, lifetime=1))
    session, token = await sessions.create(
        user_id=uuid.uuid4(), role="viewer", agent_id=None, ttl_s=60
    )
    assert session.ends_at is not None
    assert (session.ends_at - session.created_at).total_seconds() == 1
    # Sliding never pushes it past its end: not in Redis, not in what it reports.
    assert session.expires_at == session.ends_at
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    assert 0 < await redis.client.pttl(SESSION_KEY + token_hash) <= 1000

    async def ended() -> bool:
        resolved = await sessions.resolve(token)  # used all along: slides every time
        if resolved is not None:
            assert resolved.expires_at <= session.ends_at  # type: ignore[operator]
        return resolved is None

    await until(ended)
    assert await sessions.list_for_user(session.user_id) == []


async def test_a_session_is_over_at_its_expiry_in_every_read(redis: RedisStore) -> None:
    # Listed until the millisecond before its expiry, not at it: `resolve` and the
    # memory fallback hold a session over at its expiry, and the index once listed it
    # for that millisecond (a listing right after the session stopped resolving).
    now = [int(time.time() * 1000)]
    sessions = SessionStore(redis, clock=lambda: now[0])
    agent_id = uuid.uuid4()
    session, _ = await sessions.create(
        user_id=uuid.uuid4(), role="agent", agent_id=agent_id, ttl_s=60
    )
    expires_ms = int(session.expires_at.timestamp() * 1000)
    now[0] = expires_ms - 1
    assert [s.id for s in await sessions.list_for_user(session.user_id)] == [session.id]
    assert [s.id for s in (await sessions.for_agents([agent_id]))[agent_id]] == [session.id]
    now[0] = expires_ms
    assert await sessions.list_for_user(session.user_id) == []
    assert await sessions.for_agents([agent_id]) == {agent_id: []}


async def test_a_listing_writes_nothing_and_a_creation_prunes_the_expired(
    redis: RedisStore,
) -> None:
    now = [int(time.time() * 1000)]
    sessions = SessionStore(redis, clock=lambda: now[0])
    user_id, agent_id = uuid.uuid4(), uuid.uuid4()
    short, _ = await sessions.create(user_id=user_id, role="agent", agent_id=agent_id, ttl_s=5)
    long, _ = await sessions.create(user_id=user_id, role="agent", agent_id=agent_id, ttl_s=60)
    # The millisecond it expires: over for a listing, and for the prune at a creation.
    now[0] = int(short.expires_at.timestamp() * 1000)
    indexes = (f"{USER_INDEX}{user_id}", f"{AGENT_INDEX}{agent_id}")

    assert [s.id for s in await sessions.list_for_user(user_id)] == [long.id]
    assert [s.id for s in (await sessions.for_agents([agent_id]))[agent_id]] == [long.id]
    # Read with one command each and left as they were: the expired member stays...
    assert [await redis.client.zcard(index) for index in indexes] == [2, 2]
    # ...until a session of the same user and agent is created.
    await sessions.create(user_id=user_id, role="agent", agent_id=agent_id, ttl_s=60)
    assert [await redis.client.zcard(index) for index in indexes] == [2, 2]
    members = await redis.client.zrange(indexes[0], 0, -1)
    assert not any(short.id.encode() in member for member in members)


async def test_end_matching_by_key_and_by_agent(sessions: SessionStore) -> None:
    user_id, stranger = uuid.uuid4(), uuid.uuid4()
    key, other_key, agent_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    async def open_session(user: uuid.UUID, api_key: uuid.UUID, agent: uuid.UUID | None) -> str:
        _, token = await sessions.create(
            user_id=user, role="agent", agent_id=agent, ttl_s=60, api_key_id=api_key, scopes=()
        )
        return token

    by_key_bound = await open_session(user_id, key, agent_id)
    by_key = await open_session(user_id, key, None)
    other_bound = await open_session(user_id, other_key, agent_id)
    other = await open_session(user_id, other_key, None)
    strangers = await open_session(stranger, key, agent_id)
    strangers_session = await sessions.resolve(strangers)
    assert strangers_session is not None

    assert await sessions.end_matching(user_id, api_key_id=key) == 2
    for token in (by_key_bound, by_key):
        assert await sessions.resolve(token) is None
    assert await sessions.end_matching(user_id, agent_id=agent_id) == 1
    assert await sessions.resolve(other_bound) is None
    bound = await sessions.for_agents([agent_id])
    assert [s.id for s in bound[agent_id]] == [strangers_session.id]
    assert [s.api_key_id for s in await sessions.list_for_user(user_id)] == [other_key]
    assert await sessions.end_matching(user_id) == 1
    assert await sessions.resolve(other) is None
    assert await sessions.resolve(strangers) is not None


async def test_ttl_is_checked(sessions: SessionStore) -> None:
    for ttl_s in (0, 31 * 86_400):
        with pytest.raises(InvalidInput):
            await sessions.create(user_id=uuid.uuid4(), role="viewer", agent_id=None, ttl_s=ttl_s)


@pytest.fixture
def graph_unopened(settings: Settings) -> GraphStore:
    # Sessions never reach Neo4j; Stores just needs one.
    return GraphStore(settings.graph_options())


@pytest.fixture
def stores(
    postgres: PostgresStore,
    redis: RedisStore,
    graph_unopened: GraphStore,
    sessions: SessionStore,
    migrated: None,
) -> Stores:
    return Stores(postgres, graph_unopened, redis, sessions=sessions)


async def _principal(stores: Stores, token: str) -> Principal:
    return await authenticate(stores, f"Bearer {token}", None)


async def test_login_and_logout(stores: Stores, users: UserRepository) -> None:
    user = await users.create_user(email=unique_email(), role="operator")
    _, key = await users.create_api_key(user.id)

    session, token = await login(stores, key, ttl_s=600)
    principal = await _principal(stores, token)
    assert (principal.user_id, principal.role, principal.via) == (user.id, Role.OPERATOR, "session")
    assert principal.session_id == session.id
    assert [s.id for s in await list_sessions(stores, principal)] == [session.id]

    assert await logout(stores, token) is True
    with pytest.raises(ClientError) as caught:
        await _principal(stores, token)
    assert caught.value.code is ErrorCode.UNAUTHENTICATED


async def test_login_refuses_a_bad_key_or_ttl(stores: Stores, users: UserRepository) -> None:
    with pytest.raises(ClientError) as bad_key:
        await login(stores, "pg_nothing", ttl_s=600)
    assert bad_key.value.code is ErrorCode.UNAUTHENTICATED

    user = await users.create_user(email=unique_email(), role="viewer")
    _, key = await users.create_api_key(user.id)
    with pytest.raises(ClientError) as bad_ttl:
        await login(stores, key, ttl_s=0)
    assert bad_ttl.value.code is ErrorCode.BAD_USER_INPUT


async def test_only_agent_users_with_a_grant_bind_an_agent(
    stores: Stores, users: UserRepository
) -> None:
    agent_id = (await new_agent(stores.postgres)).id
    operator = await users.create_user(email=unique_email(), role="operator")
    _, operator_key = await users.create_api_key(operator.id)
    await stores.postgres.agent_grants.grant(new_ctx(), operator.id, agent_id)
    with pytest.raises(ClientError) as caught:
        await login(stores, operator_key, agent_id=agent_id, ttl_s=600)
    assert caught.value.code is ErrorCode.FORBIDDEN
    assert caught.value.field == "agentId"

    agent_user = await users.create_user(email=unique_email(), role="agent")
    _, agent_key = await users.create_api_key(agent_user.id)
    with pytest.raises(ClientError) as ungranted:
        await login(stores, agent_key, agent_id=agent_id, ttl_s=600)
    assert (ungranted.value.code, ungranted.value.field) == (ErrorCode.FORBIDDEN, "agentId")
    await stores.postgres.agent_grants.grant(new_ctx(), agent_user.id, agent_id)
    session, token = await login(stores, agent_key, agent_id=agent_id, ttl_s=600)
    assert (await _principal(stores, token)).agent_id == agent_id
    assert stores.sessions is not None
    assert [s.id for s in (await stores.sessions.for_agents([agent_id]))[agent_id]] == [session.id]


async def test_revoke_session_own_or_as_admin(stores: Stores, users: UserRepository) -> None:
    async def signed_in(role: str) -> tuple[Principal, str, str]:
        user = await users.create_user(email=unique_email(), role=role)
        _, key = await users.create_api_key(user.id)
        session, token = await login(stores, key, ttl_s=600)
        return await _principal(stores, token), session.id, token

    alice, alice_session, alice_token = await signed_in("viewer")
    bob, bob_session, bob_token = await signed_in("operator")
    admin, _, _ = await signed_in("admin")

    # Someone else's session reads as no session at all.
    assert await revoke_session(stores, bob, alice_session) is False
    assert await _principal(stores, alice_token) == alice

    assert await revoke_session(stores, alice, alice_session) is True
    assert await revoke_session(stores, alice, alice_session) is False
    assert await revoke_session(stores, admin, bob_session) is True
    for token in (alice_token, bob_token):
        with pytest.raises(ClientError):
            await _principal(stores, token)

    with pytest.raises(ClientError) as anonymous:
        await list_sessions(stores, ANONYMOUS)
    assert anonymous.value.code is ErrorCode.UNAUTHENTICATED
