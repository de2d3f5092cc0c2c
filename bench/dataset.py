"""The benchmark dataset: seeded once per scale into its own database, then reused.

Each (scale, seed) gets a PostgreSQL database of its own on the bench stack, and
a marker row (`bench_dataset`) written after the load completes says what is in
it and how long loading took. Neo4j Community has one database: every dataset's
graph lives there side by side (their ids never meet), and a sample check
rebuilds the projection when the graph has lost it.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import asyncpg

from gateway.seed import seed
from gateway.settings import Settings
from infra.local.profiles import Profile
from resolvers.graph_rebuild import rebuild
from stores import GraphStore, PostgresStore

BASE_AGENTS = 10_000
BASE_TASKS = 100_000
# Five collaborations per agent, with the delegations and ~1.4 dependencies per task,
# make about 200,000 dependencies and relationships at scale 1.
RELATIONSHIPS_PER_AGENT = 5
METRICS_DAYS = 30

MARKER_DDL = """
CREATE TABLE IF NOT EXISTS bench_dataset (
    key          text PRIMARY KEY,
    agents       integer NOT NULL,
    tasks        integer NOT NULL,
    relationships integer NOT NULL,
    dependencies integer NOT NULL,
    extra        jsonb NOT NULL DEFAULT '{}',
    seconds      double precision NOT NULL,
    loaded_at    timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class DatasetSpec:
    scale: float
    seed: int = 42

    @property
    def agents(self) -> int:
        return max(20, round(BASE_AGENTS * self.scale))

    @property
    def tasks(self) -> int:
        return max(100, round(BASE_TASKS * self.scale))

    @property
    def key(self) -> str:
        return f"a{self.agents}-t{self.tasks}-r{RELATIONSHIPS_PER_AGENT}-s{self.seed}"

    @property
    def database(self) -> str:
        return "polygraph_bench_" + self.key.replace("-", "_")


@dataclass(frozen=True)
class DatasetReport:
    key: str
    database: str
    agents: int
    tasks: int
    relationships: int
    dependencies: int
    extra: dict[str, Any]
    load_seconds: float
    cached: bool

    @property
    def rows(self) -> int:
        return (
            self.agents
            + self.tasks
            + self.relationships
            + self.dependencies
            + sum(int(v) for v in self.extra.values() if isinstance(v, int))
        )

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.load_seconds if self.load_seconds > 0 else 0.0

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "rows": self.rows, "rows_per_s": round(self.rows_per_second)}


Progress = Callable[[str, int, int], None]


METRIC_POINTS = 5_000_000


def _seed_extras() -> dict[str, Any]:
    """Arguments for seed extensions that take part in `seed()` itself, when they exist."""
    params = inspect.signature(seed).parameters
    extras: dict[str, Any] = {}
    if "metrics_days" in params:
        extras["metrics_days"] = METRICS_DAYS
    return extras


async def _seed_metrics(
    settings: Settings, postgres: PostgresStore, spec: DatasetSpec, progress: Progress
) -> dict[str, int]:
    """Metric points through the metrics store's own seeder (`gateway.seed.seed_metrics`),
    when the metrics store exists: 30 days, about 5,000,000 points at scale 1."""
    import importlib
    from datetime import timedelta

    seeding = importlib.import_module("gateway.seed")
    seed_metrics = getattr(seeding, "seed_metrics", None)
    options = getattr(settings, "metrics_options", None)
    if seed_metrics is None or options is None:
        return {}
    store_class: Any = importlib.import_module("stores.metrics").MetricsStore
    series = len(getattr(seeding, "METRIC_SERIES", ())) or 1
    points = max(1_000, round(METRIC_POINTS * spec.scale))
    step = timedelta(seconds=METRICS_DAYS * 86_400 * spec.agents * series / points)
    async with store_class(options()) as metrics:
        await metrics.migrate()
        report = await seed_metrics(
            postgres, metrics, days=METRICS_DAYS, step=step, progress=progress
        )
    return {"metric_points": int(report.points)}


async def _create_database(profile: Profile, name: str, *, fresh: bool) -> None:
    conn = await asyncpg.connect(profile.postgres_dsn())
    try:
        if fresh:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def ensure_dataset(
    profile: Profile, settings: Settings, spec: DatasetSpec, progress: Progress
) -> DatasetReport:
    """The dataset for `spec`, loaded now or found from an earlier run."""
    await _create_database(profile, spec.database, fresh=False)
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        GraphStore(settings.graph_options()) as graph,
    ):
        await postgres.migrate()
        await graph.migrate()
        async with postgres.connection() as conn:
            await conn.execute(MARKER_DDL)
            marker = await conn.fetchrow("SELECT * FROM bench_dataset WHERE key = $1", spec.key)
            partial = marker is None and await conn.fetchval("SELECT count(*) FROM agents") > 0
        if marker is not None:
            await _ensure_graph(postgres, graph, progress)
            return DatasetReport(
                key=spec.key,
                database=spec.database,
                agents=marker["agents"],
                tasks=marker["tasks"],
                relationships=marker["relationships"],
                dependencies=marker["dependencies"],
                extra=dict(marker["extra"]),
                load_seconds=marker["seconds"],
                cached=True,
            )
    if partial:
        # An interrupted load: start that database again.
        await _create_database(profile, spec.database, fresh=True)
    return await _load(settings, spec, progress)


async def _load(settings: Settings, spec: DatasetSpec, progress: Progress) -> DatasetReport:
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        GraphStore(settings.graph_options()) as graph,
    ):
        await postgres.migrate()
        async with postgres.connection() as conn:
            await conn.execute(MARKER_DDL)
        started = time.perf_counter()
        report = await seed(
            postgres,
            graph,
            agents=spec.agents,
            tasks=spec.tasks,
            seed_value=spec.seed,
            relationships_per_agent=RELATIONSHIPS_PER_AGENT,
            progress=progress,
            **_seed_extras(),
        )
        metric_points = await _seed_metrics(settings, postgres, spec, progress)
        seconds = time.perf_counter() - started
        extra = metric_points | {
            name: value
            for name, value in vars(report).items()
            if name not in ("agents", "relationships", "tasks", "dependencies", "seconds")
            and isinstance(value, int)
        }
        async with postgres.connection() as conn:
            await conn.execute(
                "INSERT INTO bench_dataset"
                " (key, agents, tasks, relationships, dependencies, extra, seconds)"
                " VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7)",
                spec.key,
                report.agents,
                report.tasks,
                report.relationships,
                report.dependencies,
                extra,
                seconds,
            )
    return DatasetReport(
        key=spec.key,
        database=spec.database,
        agents=report.agents,
        tasks=report.tasks,
        relationships=report.relationships,
        dependencies=report.dependencies,
        extra=extra,
        load_seconds=seconds,
        cached=False,
    )


async def _ensure_graph(postgres: PostgresStore, graph: GraphStore, progress: Progress) -> None:
    """Rebuild the projection when a sample of this dataset's agents is missing from Neo4j."""
    async with postgres.connection() as conn:
        sample: list[UUID] = [
            row["id"] for row in await conn.fetch("SELECT id FROM agents ORDER BY id LIMIT 20")
        ]
    found = await graph.queries.parents_of(sample)
    children = await graph.queries.children_of(sample)
    known = sum(1 for i in sample if found.get(i) is not None or children.get(i))
    if sample and known == 0:
        await rebuild(
            postgres,
            graph,
            progress=lambda stage, done, total: progress(f"graph {stage}", done, total),
            prune_only=(),
        )


async def fixture_ids(
    settings: Settings, *, agents: int, tasks: int
) -> tuple[list[UUID], list[UUID]]:
    """Ids the request bodies refer to: agents with collaborators, and tasks."""
    async with (
        PostgresStore(settings.postgres_options()) as postgres,
        postgres.connection() as conn,
    ):
        agent_rows = await conn.fetch(
            "SELECT DISTINCT source_id AS id FROM agent_relationships ORDER BY id LIMIT $1",
            agents,
        )
        task_rows = await conn.fetch("SELECT id FROM tasks ORDER BY id LIMIT $1", tasks)
    return [r["id"] for r in agent_rows], [r["id"] for r in task_rows]
