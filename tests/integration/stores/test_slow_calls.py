"""Store calls slower than their threshold are logged with store, duration and statement,
and never with the values sent along."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from gateway.settings import Settings
from stores import GraphStore, PostgresStore
from stores.graph.queries import read_collected


def _slow_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "polygraph.slow"]


async def test_a_slow_statement_is_logged_without_its_values(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    options = replace(settings.postgres_options(), slow_statement_s=0.2)
    async with PostgresStore(options) as postgres, postgres.connection() as conn:
        with caplog.at_level(logging.WARNING, logger="polygraph.slow"):
            await conn.fetchval("SELECT $1::text FROM pg_sleep(0.25)", "secret-value")
    lines = _slow_lines(caplog)
    assert any(
        line.startswith("slow postgres call: ")
        and line.endswith("ms: SELECT $1::text FROM pg_sleep(0.25)")
        for line in lines
    ), lines
    assert not any("secret-value" in line for line in lines)


async def test_a_slow_graph_read_is_logged_likewise(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    # Every read is slower than a nanosecond.
    options = replace(settings.graph_options(), slow_query_s=1e-9)
    async with GraphStore(options) as graph:
        with caplog.at_level(logging.WARNING, logger="polygraph.slow"):
            await read_collected(graph, "RETURN $value AS value", value="secret-value")
    [line] = _slow_lines(caplog)
    assert line.startswith("slow neo4j call: ") and line.endswith("ms: RETURN $value AS value")
