"""Test fixtures: the `test` profile's real servers, isolated per pytest worker.

Each worker gets its own PostgreSQL database and Redis database number. Neo4j
Community has one database, so graph tests key their data by unique ids.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from starlette.testclient import TestClient

from gateway import app as gateway_app
from gateway.app import create_app
from gateway.settings import Settings
from infra.local import stack
from infra.local.profiles import Profile, get_profile
from stores import GraphStore, PostgresStore, RedisStore
from tests.support.differential import DifferentialExecutionContext, take_mismatches

TEST_PROFILE = get_profile("test")


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "gw0")


def _worker_index() -> int:
    digits = "".join(ch for ch in _worker() if ch.isdigit())
    return int(digits or 0)


@pytest.fixture(scope="session")
def profile() -> Profile:
    return TEST_PROFILE


@pytest.fixture(scope="session")
def stack_up(profile: Profile) -> None:
    """Starts the test stack if it is not running (idempotent, safe across workers)."""
    password = Settings().neo4j_password.get_secret_value()
    stack.up(profile, neo4j_password=password, say=lambda line: None)


async def recreate_database(profile: Profile, name: str) -> None:
    conn = await asyncpg.connect(profile.postgres_dsn())
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def database_name(stack_up: None, profile: Profile) -> str:
    name = f"polygraph_test_{_worker()}"
    asyncio.run(recreate_database(profile, name))
    return name


@pytest.fixture(scope="session")
def settings(database_name: str, profile: Profile) -> Settings:
    return Settings(
        profile="test",
        postgres_dsn=profile.postgres_dsn(database_name),
        neo4j_uri=profile.bolt_uri,
        # Database 0 is left for people poking at the test stack by hand.
        redis_url=profile.redis_url(1 + _worker_index() % 15),
        postgres_pool_min=1,
        postgres_pool_max=5,
        # Mutations return as soon as their rows reach Neo4j; the long limit only
        # matters on a loaded machine, where 2 s is not always enough.
        projection_wait_s=30,
        # Past the projection wait, so a mutation waiting that long still answers.
        request_deadline_s=60,
        # Pub/sub is server-wide: each worker's events stay on its own channels.
        events_namespace=f"polygraph-test-{_worker()}",
        # Every anonymous call and login of a worker comes from one address (TestClient's):
        # far more than a client would send. tests/integration/api/test_rate_limits.py
        # runs gateways of its own with small quotas.
        rate_limit_anonymous=1_000_000,
        rate_limit_login=1_000_000,
        # Tests ask many a costly operation as one user in a few seconds.
        rate_limit_viewer=10_000_000,
        rate_limit_agent=10_000_000,
        rate_limit_operator=10_000_000,
        rate_limit_admin=10_000_000,
        # One rate limit call per request, so that round-trip counts do not depend on
        # whether a lease is held; tests/integration/api/test_rate_limits.py lends.
        rate_limit_lease_divisor=0,
        # Round-trip counts measure the stores' work, so the suite reads through the
        # entity cache; tests/integration/api/test_entity_cache.py turns it on.
        cache_enabled=False,
    )


@pytest.fixture(scope="session", autouse=True)
def _every_gateway_compares_executors() -> Iterator[None]:
    """Every gateway a test builds (the shared client, and those on settings of their
    own) answers with the planned executor and also runs each operation on graphql-core's
    own, comparing the two (tests/support/differential.py); `POLYGRAPH_EXECUTOR=stock`
    runs graphql-core's executor alone."""

    def differential(settings: Settings) -> type[DifferentialExecutionContext] | None:
        return None if settings.executor == "stock" else DifferentialExecutionContext

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gateway_app, "_execution_context", differential)
        yield


@pytest.fixture(scope="session")
def client(settings: Settings) -> Iterator[TestClient]:
    """An in-process gateway with its lifespan run (stores opened, migrations applied)."""
    with TestClient(create_app(settings)) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def _planned_matches_stock() -> Iterator[None]:
    """Fails a test during which the planned and the stock executor answered differently."""
    yield
    mismatches = take_mismatches()
    assert not mismatches, "planned and stock executors differ:\n" + "\n".join(mismatches)


@pytest.fixture
async def postgres(settings: Settings) -> AsyncIterator[PostgresStore]:
    async with PostgresStore(settings.postgres_options()) as store:
        yield store


@pytest.fixture
async def graph(settings: Settings) -> AsyncIterator[GraphStore]:
    async with GraphStore(settings.graph_options()) as store:
        yield store


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[RedisStore]:
    async with RedisStore(settings.redis_options()) as store:
        yield store
