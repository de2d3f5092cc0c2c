"""pgvector's codec on every pooled connection: vectors travel in binary, including on
connections opened before migrations created the extension."""

from __future__ import annotations

import secrets
from dataclasses import replace

import asyncpg
from pgvector import Vector

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresOptions, PostgresStore
from stores.postgres.vectors import vector_array


async def test_vectors_travel_in_binary(store: PostgresStore) -> None:
    async with store.connection() as conn:
        assert await conn.fetchval("SELECT $1::vector::text", [0.5, -1.0, 2.0]) == "[0.5,-1,2]"
        pair = await conn.fetchval("SELECT $1::vector[]::text", vector_array([[1, 2], [3, 4]]))
        returned = await conn.fetchval("SELECT '[1,2,3]'::vector")
    assert pair == '{"[1,2]","[3,4]"}'
    # Only pgvector's binary decoder returns its own type (without a codec: a string).
    assert isinstance(returned, Vector) and returned.to_list() == [1.0, 2.0, 3.0]


async def test_the_text_form_sends_the_same_vectors(settings: Settings, migrated: None) -> None:
    options = replace(settings.postgres_options(), vector_format="text")
    async with PostgresStore(options) as store, store.connection() as conn:
        assert await conn.fetchval("SELECT $1::vector::text", [0.5, -1.0, 2.0]) == "[0.5,-1,2]"
        pair = await conn.fetchval("SELECT $1::vector[]::text", vector_array([[1, 2], [3, 4]]))
        assert pair == '{"[1,2]","[3,4]"}'
        assert await conn.fetchval("SELECT '[1,2,3]'::vector") == [1.0, 2.0, 3.0]


async def test_connections_opened_before_the_extension_get_its_codec(
    profile: Profile, stack_up: None
) -> None:
    name = f"polygraph_vectors_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(profile.postgres_dsn())
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        # Both connections open on an empty database, before `CREATE EXTENSION vector`.
        options = PostgresOptions(dsn=profile.postgres_dsn(name), min_size=2, max_size=2)
        async with PostgresStore(options) as store:
            await store.migrate()
            async with store.connection() as one, store.connection() as two:
                for conn in (one, two):
                    assert await conn.fetchval("SELECT $1::vector::text", [1.0]) == "[1]"
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
