"""The hot queries use their indexes.

The queries run against a database of their own, seeded with a few thousand rows
in realistic proportions (few busy agents, few pending tasks) so the planner's
choice means something. Each query is captured as the repository sends it, then
explained with sequential scans disabled.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import asyncpg
import pytest
from asyncpg.connection import LoggedQuery

from infra.local.profiles import Profile
from stores import PostgresOptions, PostgresStore
from stores.postgres.inputs import (
    AgentFilter,
    AgentOrder,
    AuditFilter,
    TaskFilter,
    TaskOrder,
    TasksOfEach,
)
from stores.postgres.pagination import PageRequest
from tests.support.waiting import until

Call = Callable[[PostgresStore, str], Awaitable[object]]

HOT_QUERIES: list[tuple[str, Call, str, bool]] = [
    # (name, call, index expected, whether the index also gives the page its order)
    (
        "agents by status",
        lambda s, cursor: s.agents.list(
            AgentFilter(statuses=["busy"]), AgentOrder.CREATED_AT_DESC, PageRequest(first=20)
        ),
        "agents_status",
        True,
    ),
    (
        "tasks by status in priority order",
        lambda s, cursor: s.tasks.list(
            TaskFilter(statuses=["pending"]), TaskOrder.PRIORITY_DESC, PageRequest(first=20)
        ),
        "tasks_status",
        True,
    ),
    (
        "tasks in priority order, next page",
        lambda s, cursor: s.tasks.list(
            TaskFilter(), TaskOrder.PRIORITY_ASC, PageRequest(first=20, after=cursor)
        ),
        "tasks_priority",
        True,
    ),
    (
        "tasks by deadline",
        lambda s, cursor: s.tasks.list(TaskFilter(), TaskOrder.DEADLINE_ASC, PageRequest(first=20)),
        "tasks_deadline",
        True,
    ),
    (
        "tasks for assignees",
        lambda s, cursor: s.tasks.for_assignees([uuid4(), uuid4()], first=5, statuses=None),
        "tasks_assignee_created",
        False,
    ),
    (
        "a page of agents with their tasks",
        lambda s, cursor: s.agents.list_columns_with_tasks(
            AgentFilter(),
            AgentOrder.CREATED_AT_DESC,
            PageRequest(first=20),
            ["id", "name"],
            TasksOfEach(("id", "title"), first=5),
        ),
        "tasks_assignee_created",
        False,
    ),
    (
        "audit by actor",
        lambda s, cursor: s.audit.list(AuditFilter(actor_id=uuid4()), PageRequest(first=20)),
        "audit_log_actor",
        True,
    ),
    (
        "audit by resource",
        lambda s, cursor: s.audit.list(
            AuditFilter(resource_type="agent", resource_id="x"), PageRequest(last=5)
        ),
        "audit_log_resource",
        True,
    ),
    (
        "task events",
        lambda s, cursor: s.tasks.events_of([uuid4()]),
        "task_events_task_id_version_key",
        False,
    ),
    (
        "dependents",
        lambda s, cursor: s.tasks.dependents_of([uuid4()]),
        "task_dependencies_depends_on",
        False,
    ),
    (
        "achievements",
        lambda s, cursor: s.achievements.for_agents([uuid4()], first=10),
        "achievements_agent",
        False,
    ),
    (
        "leaderboard since",
        lambda s, cursor: s.achievements.leaderboard(first=5, since=datetime.now(UTC)),
        "achievements_awarded_at",
        False,
    ),
    (
        "relationships, either end",
        lambda s, cursor: s.agents.relationships_of([uuid4()]),
        "agent_relationships_target",
        False,
    ),
]

_SEED = """
INSERT INTO agents (name, status, created_at)
SELECT 'seed-' || i, CASE WHEN i % 20 = 0 THEN 'busy' ELSE 'idle' END,
       now() - i * interval '1 minute'
FROM generate_series(1, 2000) AS i;

INSERT INTO tasks (title, status, priority, assignee_id, deadline, created_at)
SELECT 'seed-' || i, CASE WHEN i % 50 = 0 THEN 'pending' ELSE 'completed' END, 1 + i % 10,
       a.ids[1 + i % 2000],
       CASE WHEN i % 3 = 0 THEN NULL ELSE now() + i * interval '1 hour' END,
       now() - i * interval '1 minute'
FROM generate_series(1, 5000) AS i, (SELECT array_agg(id) AS ids FROM agents) AS a;

INSERT INTO task_events (task_id, version, type) SELECT id, 1, 'created' FROM tasks;

INSERT INTO task_dependencies (task_id, depends_on_id)
SELECT t.ids[i], t.ids[i + 1]
FROM (SELECT array_agg(id ORDER BY created_at) AS ids FROM tasks) AS t,
     generate_series(1, 4999) AS i;

INSERT INTO agent_relationships (source_id, target_id, type)
SELECT a.ids[i], a.ids[i + 1], 'COLLABORATES_WITH'
FROM (SELECT array_agg(id) AS ids FROM agents) AS a, generate_series(1, 1999) AS i;

INSERT INTO achievements (agent_id, type, points, awarded_at)
SELECT a.ids[1 + i % 2000], 'seed', i % 100, now() - i * interval '1 hour'
FROM generate_series(1, 4000) AS i, (SELECT array_agg(id) AS ids FROM agents) AS a;

INSERT INTO audit_log (actor_id, action, resource_type, resource_id, created_at)
SELECT u.ids[1 + i % 100], 'update', 'agent', i::text, now() - i * interval '1 minute'
FROM generate_series(1, 5000) AS i,
     (SELECT array_agg(gen_random_uuid()) AS ids FROM generate_series(1, 100)) AS u;

ANALYZE;
"""


@pytest.fixture(scope="module")
async def seeded(profile: Profile, stack_up: None) -> AsyncIterator[tuple[PostgresStore, str]]:
    """A store on a fresh, seeded database with one pooled connection, and a task cursor."""
    name = f"polygraph_indexes_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(profile.postgres_dsn())
    await admin.execute(f'CREATE DATABASE "{name}"')
    try:
        options = PostgresOptions(dsn=profile.postgres_dsn(name), min_size=1, max_size=1)
        async with PostgresStore(options) as store:
            await store.migrate()
            async with store.connection() as conn:
                await conn.execute(_SEED)
            page = await store.tasks.list(
                TaskFilter(), TaskOrder.PRIORITY_ASC, PageRequest(first=100)
            )
            yield store, page.cursors[-1]
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.mark.parametrize(
    ("call", "index", "ordered"),
    [pytest.param(call, index, ordered, id=name) for name, call, index, ordered in HOT_QUERIES],
)
async def test_hot_query_uses_its_index(
    seeded: tuple[PostgresStore, str], call: Call, index: str, ordered: bool
) -> None:
    store, cursor = seeded
    # Once first, so a type's first use on the connection (introspection) is not captured.
    await call(store, cursor)
    sent: list[LoggedQuery] = []
    async with store.connection() as conn:
        conn.add_query_logger(sent.append)
    try:
        await call(store, cursor)
        # asyncpg calls its query loggers on a later turn of the event loop.
        await until(lambda: bool(sent))
    finally:
        async with store.connection() as conn:
            conn.remove_query_logger(sent.append)
    [query] = sent

    async with store.connection() as conn:
        await conn.execute("SET enable_seqscan = off")
        [plan] = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {query.query}", *query.args)

    nodes = list(_nodes(plan["Plan"]))
    used = {node.get("Index Name") for node in nodes}
    assert index in used, f"{index} not used by:\n{query.query}\nplan: {nodes}"
    if ordered:
        sorts = [node for node in nodes if node["Node Type"] in ("Sort", "Incremental Sort")]
        assert not sorts, f"the index should give the page its order:\n{query.query}"


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)
