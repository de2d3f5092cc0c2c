"""Helpers shared by the PostgreSQL domain tests: unique data, write contexts,
readers for the audit and outbox rows a write leaves behind, and a database of a
test's own."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

from pydantic import SecretStr

from gateway.settings import Settings
from infra.local.profiles import Profile
from stores import PostgresStore
from stores.postgres.inputs import AgentInput, TaskInput
from stores.postgres.records import Agent, Task, WriteContext
from tests.conftest import recreate_database


@asynccontextmanager
async def store_of_its_own(
    settings: Settings, profile: Profile, prefix: str
) -> AsyncIterator[PostgresStore]:
    """A store on a fresh, migrated database (one per pytest worker), which no gateway
    of the session serves and no other test writes to."""
    name = f"{prefix}_{os.environ.get('PYTEST_XDIST_WORKER', 'gw0')}"
    await recreate_database(profile, name)
    own = settings.model_copy(update={"postgres_dsn": SecretStr(profile.postgres_dsn(name))})
    async with PostgresStore(own.postgres_options()) as store:
        await store.migrate()
        yield store


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(6)}"


def new_ctx(*, actor_id: UUID | None = None, key: str | None = None) -> WriteContext:
    """A caller of its own (fresh actor, fresh request id) unless told otherwise."""
    return WriteContext(
        actor_id=actor_id or uuid4(),
        request_id=unique("req"),
        client_address="127.0.0.1",
        idempotency_key=key,
    )


async def new_agent(store: PostgresStore, **fields: Any) -> Agent:
    fields.setdefault("name", unique("agent"))
    return await store.agents.create(new_ctx(), AgentInput(**fields))


async def new_task(store: PostgresStore, **fields: Any) -> Task:
    fields.setdefault("title", unique("task"))
    return await store.tasks.create(new_ctx(), TaskInput(**fields))


async def audit_rows(store: PostgresStore, ctx: WriteContext) -> list[dict[str, Any]]:
    async with store.connection() as conn:
        rows = await conn.fetch(
            "SELECT action, resource_type, resource_id, old_value, new_value, actor_id,"
            " host(client_address) AS client_address"
            " FROM audit_log WHERE request_id = $1 ORDER BY id",
            ctx.request_id,
        )
    return [dict(row) for row in rows]


async def outbox_rows(store: PostgresStore, **match: str) -> list[tuple[str, dict[str, Any]]]:
    """Outbox rows whose payload contains `match` (ids as strings), oldest first."""
    async with store.connection() as conn:
        rows = await conn.fetch(
            "SELECT kind, payload FROM outbox WHERE payload @> $1::jsonb ORDER BY id", match
        )
    return [(row["kind"], row["payload"]) for row in rows]
