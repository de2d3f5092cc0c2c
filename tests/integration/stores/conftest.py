"""Fixtures for the PostgreSQL domain tests: the worker's own database, migrated."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from gateway.settings import Settings
from stores import PostgresStore


@pytest.fixture(scope="session")
async def migrated(settings: Settings) -> None:
    async with PostgresStore(settings.postgres_options()) as store:
        await store.migrate()


@pytest.fixture
def store(postgres: PostgresStore, migrated: None) -> PostgresStore:
    return postgres


@pytest.fixture
async def single(settings: Settings, migrated: None) -> AsyncIterator[PostgresStore]:
    """A store with exactly one pooled connection, so a test can watch every statement."""
    options = replace(settings.postgres_options(), min_size=1, max_size=1)
    async with PostgresStore(options) as one:
        yield one
