"""The benchmark dataset: seeded once per scale into its own database, then reused.

Each (scale, seed) gets a PostgreSQL database of its own on the bench stack, and
a marker row (`bench_dataset`) written after the load completes says what is in
it and how long loading took. Knowledge items (with embeddings, from the search
bench's vector cache) came later: a dataset loaded without them gets them added.
Neo4j Community has one database: every dataset's graph lives there side by side
(their ids never meet), and a sample check rebuilds the projection when the graph
has lost it.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any
from uuid import UUID

import asyncpg

from bench import knowledge_vectors
from gateway.settings import Settings
from infra.local.profiles import Profile
from seeding.platform import METRIC_SERIES, seed, seed_metrics
from stores import GraphStore, PostgresStore
from stores.embeddings import create_embedder
from stores.metrics import MetricsStore
from stores.postgres.advisory import JobAlreadyRunning
from stores.search import EmbeddingSpace, SearchStore
from workers.embeddings import FILLER_JOB, fill_pending
from workers.graph_rebuild import rebuild
from workers.projector import Projector

BASE_AGENTS = 10_000
BASE_TASKS = 100_000
# Five collaborations per agent, with the delegations and ~1.4 dependencies per task,
# make about 200,000 dependencies and relationships at scale 1.
RELATIONSHIPS_PER_AGENT = 5
METRICS_DAYS = 30
# Embedded knowledge items at scale 1; at least MIN_KNOWLEDGE_ITEMS, so --quick's tiny
# scale still gives vector search a corpus worth an HNSW index.
BASE_KNOWLEDGE_ITEMS = 50_000
MIN_KNOWLEDGE_ITEMS = 200

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
    def knowledge_items(self) -> int:
        return max(MIN_KNOWLEDGE_ITEMS, round(BASE_KNOWLEDGE_ITEMS * self.scale))

    # Knowledge items are not in the key: a dataset loaded before they were part of it
    # keeps its database and gets them added (see `ensure_dataset`).
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
    # What `settle_embeddings` found pending and filled before anything was measured.
    embeddings: dict[str, Any] = field(default_factory=dict)

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


async def _seed_metrics(
    settings: Settings, postgres: PostgresStore, spec: DatasetSpec, progress: Progress
) -> dict[str, Any]:
    """METRICS_DAYS of points ending now, about 5,000,000 at scale 1, and when they end:
    the scenarios read the last day and hour of the data, not of the clock."""
    points = max(1_000, round(METRIC_POINTS * spec.scale))
    step = timedelta(seconds=METRICS_DAYS * 86_400 * spec.agents * len(METRIC_SERIES) / points)
    async with MetricsStore(settings.metrics_options()) as metrics:
        await metrics.migrate()
        report = await seed_metrics(
            postgres, metrics, days=METRICS_DAYS, step=step, progress=progress
        )
    return {"metric_points": report.points, "metrics_end": report.end.isoformat()}


async def _seed_knowledge(
    settings: Settings, postgres: PostgresStore, spec: DatasetSpec, progress: Progress
) -> dict[str, Any]:
    """The first `spec.knowledge_items` items of the search bench's corpus, with their
    vectors from its cache (`bench.knowledge_vectors`), each drawn a dataset agent."""
    search = SearchStore(postgres, settings.search_options())
    embedder = create_embedder(settings.embedder_options())
    try:
        # Embeds only what no cache holds (none at all while a 100,000-item cache exists).
        corpus = await knowledge_vectors.corpus(embedder, spec.knowledge_items, progress=progress)
    finally:
        await embedder.aclose()
    agents = await search.knowledge.agent_ids(spec.agents)
    # Agents are drawn here, not by `generate_items(agent_ids=...)`: that draws from the
    # items' own generator, which would change every item and miss the vector cache.
    rng = random.Random(spec.seed)
    items = [
        replace(item, data=replace(item.data, agent_id=rng.choice(agents))) for item in corpus.items
    ]
    space = EmbeddingSpace(embedder.model, embedder.dimension)
    await knowledge_vectors.load(search, space, items, corpus.vectors, progress=progress)
    return {"knowledge_items": len(items)}


SeedPart = Callable[[Settings, PostgresStore, DatasetSpec, Progress], Awaitable[dict[str, Any]]]

# Parts that joined the dataset after its first version, by the `extra` key each
# records: a cached dataset without one gets it added on its next run.
_LATER_PARTS: dict[str, SeedPart] = {
    "metric_points": _seed_metrics,
    "knowledge_items": _seed_knowledge,
}


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
    """The dataset for `spec`, loaded now or found from an earlier run, with every
    embedding filled: nothing is left for a gateway to embed while the bench measures."""
    report = await _ensure_rows(profile, settings, spec, progress)
    return replace(report, embeddings=await settle_embeddings(settings, progress))


# How long to wait for another process's pass over the pending embeddings, per check,
# and in all; and passes of our own before giving up on rows that stay pending.
_FILLER_WAIT_S = 2.0
_FILLER_WAIT_LIMIT_S = 900.0
_FILL_PASSES = 3


async def settle_embeddings(settings: Settings, progress: Progress | None = None) -> dict[str, Any]:
    """Fill every pending embedding (knowledge items, memories, tasks, messages) now,
    and check that none is left.

    A dataset made before a migration that added an embedding (0010: tasks) has every
    row of that table pending; a gateway started on it would embed them in the
    background while the scenarios run, measuring that work too. Between scenarios
    the harness calls it without `progress`. Returns what was filled and how long it
    took."""
    started = time.perf_counter()
    filled: dict[str, int] = {}
    async with PostgresStore(settings.postgres_options()) as postgres:
        search = SearchStore(postgres, settings.search_options())
        embedder = create_embedder(settings.embedder_options())
        try:
            passes = 0
            waited_s = 0.0
            while True:
                try:
                    # The gateways' own filler takes the same lock: one pass at a time.
                    async with postgres.exclusive_job(FILLER_JOB):
                        report = await fill_pending(search, embedder, progress=progress)
                except JobAlreadyRunning:
                    waited_s += _FILLER_WAIT_S
                    if waited_s > _FILLER_WAIT_LIMIT_S:
                        raise RuntimeError(
                            "another process has held the embedding filler's lock for"
                            f" {_FILLER_WAIT_LIMIT_S:.0f} s: is a gateway still running"
                            " on the bench stack?"
                        ) from None
                    await asyncio.sleep(_FILLER_WAIT_S)
                    continue
                for name, count in asdict(report).items():
                    filled[name] = filled.get(name, 0) + count
                left = {
                    "knowledge": await search.knowledge.count_pending(),
                    "memories": await search.memories.count_pending(),
                    "tasks": await search.tasks.count_pending(),
                    "messages": await search.messages.count_pending(),
                }
                if not any(left.values()):
                    break
                passes += 1
                if passes >= _FILL_PASSES:
                    raise RuntimeError(f"embeddings still pending after {passes} passes: {left}")
        finally:
            await embedder.aclose()
    return {"filled": filled, "seconds": round(time.perf_counter() - started, 1)}


async def _ensure_rows(
    profile: Profile, settings: Settings, spec: DatasetSpec, progress: Progress
) -> DatasetReport:
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
            await _forget_run_writes(postgres, graph, progress)
            extra = dict(marker["extra"])
            seconds = marker["seconds"]
            for name, seed_part in _LATER_PARTS.items():
                if name in extra:
                    continue
                # Loaded before datasets had this part: add it, and only it.
                started = time.perf_counter()
                added = await seed_part(settings, postgres, spec, progress)
                took = time.perf_counter() - started
                async with postgres.connection() as conn:
                    await conn.execute(
                        "UPDATE bench_dataset SET extra = extra || $2::jsonb,"
                        " seconds = seconds + $3 WHERE key = $1",
                        spec.key,
                        added,
                        took,
                    )
                extra |= added
                seconds += took
            return DatasetReport(
                key=spec.key,
                database=spec.database,
                agents=marker["agents"],
                tasks=marker["tasks"],
                relationships=marker["relationships"],
                dependencies=marker["dependencies"],
                extra=extra,
                load_seconds=seconds,
                cached=True,
            )
    if partial:
        # An interrupted load: start that database again.
        await _create_database(profile, spec.database, fresh=True)
    return await _load(settings, spec, progress)


# What runs write into a reused dataset: S5's tasks, C1's queues and claimer agents.
_FORGET_RUN_WRITES = """
WITH gone_tasks AS (
    DELETE FROM tasks WHERE repository = 'bench/load' OR repository LIKE 'bench/claims-%'
    RETURNING id
), gone_agents AS (
    DELETE FROM agents WHERE name LIKE 'bench-claimer-%' RETURNING id
), gone_users AS (
    DELETE FROM users WHERE email LIKE 'bench-claimer-%@polygraph.local' RETURNING id
), queued AS (
    INSERT INTO outbox (kind, payload)
    SELECT 'task.deleted', jsonb_build_object('id', id) FROM gone_tasks
    UNION ALL
    SELECT 'agent.deleted', jsonb_build_object('id', id) FROM gone_agents
)
SELECT (SELECT count(*) FROM gone_tasks) AS tasks, (SELECT count(*) FROM gone_agents) AS agents
"""


_FORGET_TIMEOUT_S = 1800.0


async def _forget_run_writes(
    postgres: PostgresStore, graph: GraphStore, progress: Progress
) -> None:
    """Remove what earlier runs wrote, from PostgreSQL and (through the outbox, applied
    here) from Neo4j: a reused dataset measures what was seeded. Left in place, C1's
    claimer, the newest agent, topped every page of agents with tens of thousands of
    tasks, and the tasks table grew past three times its size."""
    async with postgres.connection() as conn, conn.transaction():
        # Hundreds of thousands of rows after many runs: past a request's time limit.
        await conn.execute("SET LOCAL statement_timeout = 0")
        gone = await conn.fetchrow(_FORGET_RUN_WRITES, timeout=_FORGET_TIMEOUT_S)
    assert gone is not None  # an aggregate answers one row
    if not gone["tasks"] and not gone["agents"]:
        return
    projector = Projector(postgres, graph, batch_size=1000)
    pending = gone["tasks"] + gone["agents"]
    applied = 0
    # Also applies anything else left pending: the scenarios start from a settled graph.
    while batch := await projector.run_once():
        applied += batch
        progress("forget earlier runs' writes", min(applied, pending), pending)
    async with postgres.connection() as conn:
        await conn.execute("VACUUM ANALYZE tasks")


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
        )
        metric_points = await _seed_metrics(settings, postgres, spec, progress)
        knowledge = await _seed_knowledge(settings, postgres, spec, progress)
        seconds = time.perf_counter() - started
        extra = (
            metric_points
            | knowledge
            | {
                name: value
                for name, value in vars(report).items()
                if name not in ("agents", "relationships", "tasks", "dependencies", "seconds")
                and isinstance(value, int)
            }
        )
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
    children = await graph.queries.children_of(sample, first=1)
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
