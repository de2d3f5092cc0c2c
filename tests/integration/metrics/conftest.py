"""Fixtures for the metrics tests: the worker's database, a metrics schema per need,
and TimescaleDB in WebAssembly (infra/timescale) for the conformance tests."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from gateway.settings import Settings
from stores.metrics import MetricPoint, MetricsStore

# The GraphQL callers and runner of the API tests, for the metrics API tests here.
from tests.integration.api.conftest import gql, make_caller, operator, viewer

__all__ = ["gql", "make_caller", "operator", "viewer"]

TIMESCALE_DIR = Path(__file__).resolve().parents[3] / "infra" / "timescale"


@pytest.fixture
async def metrics(settings: Settings) -> AsyncIterator[MetricsStore]:
    """The worker's shared metrics schema (the one the test gateway uses)."""
    async with MetricsStore(settings.metrics_options()) as store:
        await store.migrate()
        yield store


@pytest.fixture
async def schema_store(settings: Settings) -> AsyncIterator[Callable[..., MetricsStore]]:
    """A metrics store in a schema of its own, dropped afterwards: for tests that
    drop data (retention) or change options."""
    made: list[str] = []

    def make(**options: Any) -> MetricsStore:
        schema = f"metrics_t_{secrets.token_hex(4)}"
        made.append(schema)
        return MetricsStore(replace(settings.metrics_options(), schema=schema, **options))

    yield make
    conn = await asyncpg.connect(settings.postgres_dsn.get_secret_value())
    try:
        for schema in made:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await conn.close()


def hour_ago(hours: int = 2) -> datetime:
    """A whole UTC hour some hours back: within retention, clear of 'now'."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours)


def points_for(agent_id: uuid.UUID, name: str, start: datetime, values: Sequence[float],
               step: timedelta = timedelta(seconds=20)) -> list[MetricPoint]:  # fmt: skip
    return [MetricPoint(agent_id, name, start + i * step, v) for i, v in enumerate(values)]


def run_timescale(statements: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs statements in a fresh TimescaleDB (PGlite + TimescaleDB 2.23, WebAssembly)."""
    node = shutil.which("node")
    assert node, (
        "Node 20+ is needed for the TimescaleDB conformance tests (`apt-get install nodejs`)"
    )
    assert (TIMESCALE_DIR / "node_modules").exists(), (
        "TimescaleDB for tests is not installed: run `make install` "
        "(or `npm ci --prefix infra/timescale`)"
    )
    completed = subprocess.run(
        [node, str(TIMESCALE_DIR / "run.mjs")],
        input=json.dumps(list(statements), default=str),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results: list[dict[str, Any]] = json.loads(completed.stdout)
    return results
