"""Users and API keys against a real PostgreSQL."""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore
from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres import UserRepository
from stores.postgres.records import WriteContext
from tests.integration.auth.conftest import unique_email

KEY_FORMAT = re.compile(r"pg_[a-z0-9]{8}_[A-Za-z0-9_-]{43}")


async def test_create_user_and_read_it_back(users: UserRepository) -> None:
    email = unique_email()
    user = await users.create_user(email=email.upper(), display_name="Ada", role="operator")
    assert (user.email, user.display_name, user.role) == (email, "Ada", "operator")
    assert user.created_at.tzinfo is not None
    assert await users.by_ids([user.id, uuid.uuid4()]) == {user.id: user}
    assert await users.by_ids([]) == {}
    assert await users.by_email(f"  {email.upper()} ") == user
    assert await users.by_email(unique_email()) is None


async def test_duplicate_email_is_a_conflict_on_email(users: UserRepository) -> None:
    email = unique_email()
    await users.create_user(email=email, role="viewer")
    with pytest.raises(Conflict) as caught:
        await users.create_user(email=email.title(), role="admin")
    assert caught.value.field == "email"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": unique_email(), "role": "root"}, "role"),
        ({"email": "no-at-sign", "role": "viewer"}, "email"),
        ({"email": "two words@example.test", "role": "viewer"}, "email"),
    ],
)
async def test_bad_input_names_the_field(
    users: UserRepository, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        await users.create_user(**fields)
    assert caught.value.field == field


async def test_api_key_is_shown_once_and_only_its_hash_is_kept(
    users: UserRepository, postgres: PostgresStore
) -> None:
    user = await users.create_user(email=unique_email(), role="agent")
    api_key, key = await users.create_api_key(user.id, name="ci", scopes=["read"])
    assert KEY_FORMAT.fullmatch(key)
    assert key.startswith(f"pg_{api_key.prefix}_")
    assert (api_key.name, api_key.scopes, api_key.revoked_at) == ("ci", ("read",), None)

    async with postgres.connection() as conn:
        row = await conn.fetchrow("SELECT * FROM api_keys WHERE id = $1", api_key.id)
    assert row is not None
    assert row["key_hash"] == hashlib.sha256(key.encode()).digest()
    secret = key.removeprefix(f"pg_{api_key.prefix}_")
    assert not any(secret in str(value) for value in row.values())


async def test_authenticate_api_key(users: UserRepository) -> None:
    user = await users.create_user(email=unique_email(), role="operator")
    api_key, key = await users.create_api_key(user.id, name="cli")

    found = await users.authenticate_api_key(key)
    assert found is not None
    assert found[0] == user
    assert found[1].id == api_key.id
    assert found[1].last_used_at is not None

    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert await users.authenticate_api_key(tampered) is None
    assert await users.authenticate_api_key("pg_short") is None
    assert await users.authenticate_api_key("") is None


async def test_revoked_key_is_refused(users: UserRepository) -> None:
    user = await users.create_user(email=unique_email(), role="viewer")
    other = await users.create_user(email=unique_email(), role="viewer")
    api_key, key = await users.create_api_key(user.id)

    assert await users.revoke_api_key(api_key.id, owner_id=other.id) is None
    assert await users.authenticate_api_key(key) is not None
    assert await users.revoke_api_key(api_key.id, owner_id=user.id) == user.id
    assert await users.revoke_api_key(api_key.id, owner_id=None) is None
    assert await users.authenticate_api_key(key) is None
    (listed,) = await users.list_api_keys(user.id)
    assert listed.revoked_at is not None


async def test_expired_key_is_refused(users: UserRepository, postgres: PostgresStore) -> None:
    user = await users.create_user(email=unique_email(), role="viewer")
    later = datetime.now(UTC) + timedelta(hours=1)
    api_key, key = await users.create_api_key(user.id, expires_at=later)
    assert api_key.expires_at == later
    assert await users.authenticate_api_key(key) is not None

    async with postgres.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
            api_key.id,
        )
    assert await users.authenticate_api_key(key) is None


async def test_key_input_is_checked(users: UserRepository) -> None:
    user = await users.create_user(email=unique_email(), role="viewer")
    with pytest.raises(InvalidInput) as past:
        await users.create_api_key(user.id, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert past.value.field == "expires_at"
    with pytest.raises(InvalidInput) as naive:
        await users.create_api_key(user.id, expires_at=datetime.now() + timedelta(days=1))
    assert naive.value.field == "expires_at"
    with pytest.raises(InvalidInput) as scopes:
        await users.create_api_key(user.id, scopes=["tasks read"])
    assert scopes.value.field == "scopes"
    with pytest.raises(NotFound):
        await users.create_api_key(uuid.uuid4())


async def test_last_used_at_moves_at_most_once_a_minute(
    users: UserRepository, postgres: PostgresStore
) -> None:
    user = await users.create_user(email=unique_email(), role="viewer")
    api_key, key = await users.create_api_key(user.id)
    assert api_key.last_used_at is None

    first = await users.authenticate_api_key(key)
    second = await users.authenticate_api_key(key)
    assert first is not None and second is not None
    assert first[1].last_used_at is not None
    assert second[1].last_used_at == first[1].last_used_at

    async with postgres.connection() as conn:
        await conn.execute(
            "UPDATE api_keys SET last_used_at = now() - interval '61 seconds' WHERE id = $1",
            api_key.id,
        )
    third = await users.authenticate_api_key(key)
    assert third is not None and third[1].last_used_at is not None
    assert third[1].last_used_at > first[1].last_used_at


async def test_list_api_keys_newest_first(users: UserRepository) -> None:
    user = await users.create_user(email=unique_email(), role="viewer")
    older, _ = await users.create_api_key(user.id, name="older")
    newer, _ = await users.create_api_key(user.id, name="newer")
    assert [k.id for k in await users.list_api_keys(user.id)] == [newer.id, older.id]
    assert await users.list_api_keys(uuid.uuid4()) == []


@pytest.fixture
async def lonely(profile: Profile, settings: Settings) -> AsyncIterator[PostgresStore]:
    """A database of this test's own, so it can hold exactly one admin."""
    name = f"polygraph_lonely_{secrets.token_hex(4)}"
    admin_dsn = profile.postgres_dsn()
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    options = replace(settings.postgres_options(), dsn=profile.postgres_dsn(name))
    try:
        async with PostgresStore(options) as store:
            await store.migrate()
            yield store
    finally:
        conn = await asyncpg.connect(admin_dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


async def test_the_last_enabled_admin_is_neither_disabled_nor_demoted(
    lonely: PostgresStore,
) -> None:
    users = lonely.users
    ctx = WriteContext(actor_id=None, request_id="test")
    only = await users.create_user(email=unique_email(), role="admin")
    for refused in (
        users.set_disabled(only.id, True, ctx=ctx),
        users.set_role(only.id, "operator", ctx=ctx),
    ):
        with pytest.raises(Conflict):
            await refused
    second = await users.create_user(email=unique_email(), role="admin")
    demoted, changed = await users.set_role(only.id, "operator", ctx=ctx)
    assert (demoted.role, changed) == ("operator", True)
    assert (await users.set_role(only.id, "operator", ctx=ctx))[1] is False
    with pytest.raises(Conflict):
        await users.set_disabled(second.id, True, ctx=ctx)
    await users.set_role(only.id, "admin", ctx=ctx)
    disabled, _ = await users.set_disabled(second.id, True, ctx=ctx)
    assert disabled.disabled_at is not None
    # A disabled admin does not count: the other one is now the last.
    with pytest.raises(Conflict):
        await users.set_role(only.id, "viewer", ctx=ctx)
    with pytest.raises(NotFound):
        await users.set_disabled(uuid.uuid4(), True, ctx=ctx)
