"""`polygraph seed`: a realistic, deterministic demo dataset, loaded with COPY.

The same `--seed` gives the same rows, ids included. Agents form a hierarchy
(orchestrators at the top), collaborate in small clusters and delegate down the
tree; tasks belong to repositories, depend only on older tasks of the same
repository (so the dependency graph is a DAG), and have statuses, times and
retries that agree with the state machine. Neo4j is filled by a graph rebuild.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID

import numpy as np
import numpy.typing as npt

from stores import GraphStore, PostgresStore
from stores.errors import InvalidInput
from stores.metrics import Backend, CopyData, EncodedPoints, MetricsStore, Rollups, binary
from stores.metrics.buckets import ORIGIN
from stores.postgres import bulk, metric_names
from stores.postgres.records import Agent, AgentRelationship, Task
from workers.graph_rebuild import rebuild

ROLES = ("orchestrator", "planner", "researcher", "coder", "reviewer", "tester", "analyst")
CAPABILITIES = (
    "python", "typescript", "sql", "cypher", "search", "summarise", "plan", "review",
    "test", "deploy", "embed", "browse", "translate", "math",
)  # fmt: skip
TAGS = ("alpha", "beta", "prod", "staging", "gpu", "cpu", "eu", "us", "night", "day")
ADJECTIVES = (
    "amber", "brisk", "calm", "deft", "eager", "fleet", "keen", "lucid", "nimble", "quiet",
    "rapid", "sage", "steady", "swift", "vivid", "wise",
)  # fmt: skip
NOUNS = (
    "falcon", "otter", "heron", "lynx", "badger", "wren", "marten", "ibis", "kestrel",
    "orca", "raven", "stoat", "tern", "vole",
)  # fmt: skip
REPOSITORIES = (
    "platform/api", "platform/web", "agents/runtime", "agents/memory", "data/pipeline",
    "data/warehouse", "infra/deploy", "docs/site",
)  # fmt: skip
VERBS = ("Implement", "Fix", "Refactor", "Document", "Benchmark", "Review", "Test", "Migrate")
SUBJECTS = (
    "rate limiter", "session cache", "search ranking", "retry policy", "task scheduler",
    "embedding job", "audit export", "login flow", "graph projection", "metrics rollup",
    "health checks", "pagination", "error masking", "schema export",
)  # fmt: skip
TASK_TYPES = ("feature", "bug", "chore", "research", "review")
# Status mix of a platform that has been running for a while.
TASK_STATUSES = (
    ("completed", 45), ("in_progress", 15), ("assigned", 12), ("pending", 15),
    ("failed", 8), ("cancelled", 5),
)  # fmt: skip
AGENT_STATUSES = (("idle", 40), ("active", 30), ("busy", 20), ("offline", 7), ("error", 3))


@dataclass(frozen=True)
class SeedReport:
    agents: int
    relationships: int
    tasks: int
    dependencies: int
    seconds: float

    @property
    def rows(self) -> int:
        return self.agents + self.relationships + self.tasks + self.dependencies


Progress = Callable[[str, int, int], None]


def _weighted(rng: random.Random, table: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([v for v, _ in table], weights=[w for _, w in table])[0]


def _uuid(rng: random.Random) -> UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def generate_agents(rng: random.Random, count: int, now: datetime) -> list[Agent]:
    agents: list[Agent] = []
    roots = max(1, count // 20)
    for index in range(count):
        created = now - timedelta(days=30) + timedelta(seconds=index * 2_592_000 / max(count, 1))
        is_root = index < roots
        # Parents come from earlier agents only, so parents precede children in COPY.
        parent = (
            None if is_root else agents[rng.randrange(min(len(agents), max(roots, index // 3)))]
        )
        role = "orchestrator" if is_root else rng.choice(ROLES[1:])
        name = f"{rng.choice(ADJECTIVES)}-{rng.choice(NOUNS)}-{index:05d}"
        agents.append(
            Agent(
                id=_uuid(rng),
                name=name,
                role=role,
                status=_weighted(rng, AGENT_STATUSES),
                capabilities=tuple(sorted(rng.sample(CAPABILITIES, rng.randint(2, 5)))),
                tags=tuple(sorted(rng.sample(TAGS, rng.randint(1, 3)))),
                notes="",
                metadata={
                    "model": rng.choice(("small", "medium", "large")),
                    "region": rng.choice(("eu", "us")),
                },
                parent_id=parent.id if parent else None,
                created_at=created,
                updated_at=created,
                version=1,
            )
        )
    return agents


def generate_relationships(
    rng: random.Random, agents: list[Agent], per_agent: int, now: datetime
) -> list[AgentRelationship]:
    links: dict[tuple[UUID, UUID, str], AgentRelationship] = {}
    if len(agents) < 2:
        return []
    by_id = {agent.id: agent for agent in agents}
    for agent in agents:
        for _ in range(per_agent):
            other = agents[rng.randrange(len(agents))]
            if other.id == agent.id:
                continue
            key = (agent.id, other.id, "COLLABORATES_WITH")
            links[key] = AgentRelationship(
                agent.id, other.id, "COLLABORATES_WITH", round(rng.uniform(0.1, 1.0), 2), now
            )
        if agent.parent_id is not None and agent.parent_id in by_id and rng.random() < 0.7:
            key = (agent.parent_id, agent.id, "DELEGATES_TO")
            links[key] = AgentRelationship(agent.parent_id, agent.id, "DELEGATES_TO", 1.0, now)
    return list(links.values())


def generate_tasks(
    rng: random.Random, count: int, agents: list[Agent], now: datetime
) -> tuple[list[Task], list[tuple[UUID, UUID]]]:
    tasks: list[Task] = []
    edges: list[tuple[UUID, UUID]] = []
    by_repository: dict[str, list[UUID]] = {repo: [] for repo in REPOSITORIES}
    for index in range(count):
        created = now - timedelta(days=30) + timedelta(seconds=index * 2_592_000 / max(count, 1))
        status = _weighted(rng, TASK_STATUSES)
        assignee = agents[rng.randrange(len(agents))].id if agents and status != "pending" else None
        if status == "cancelled" and rng.random() < 0.5:
            assignee = None
        started = (
            created + timedelta(minutes=rng.randint(1, 600))
            if status in ("in_progress", "completed", "failed")
            else None
        )
        completed = (
            started + timedelta(minutes=rng.randint(5, 2_000))
            if started and status in ("completed", "failed")
            else None
        )
        max_retries = rng.choice((0, 1, 3, 3, 5))
        retry_count = rng.randint(0, max_retries) if status == "failed" else 0
        repository = rng.choice(REPOSITORIES)
        task_id = _uuid(rng)
        updated = max(t for t in (created, started, completed) if t is not None)
        tasks.append(
            Task(
                id=task_id,
                title=f"{rng.choice(VERBS)} {rng.choice(SUBJECTS)} in {repository}",
                description="",
                repository=repository,
                type=rng.choice(TASK_TYPES),
                payload={"estimate_hours": rng.randint(1, 40)},
                priority=rng.randint(1, 10),
                status=status,
                assignee_id=assignee,
                creator_id=None,
                workflow_id=None,
                deadline=created + timedelta(days=rng.randint(1, 45))
                if rng.random() < 0.6
                else None,
                started_at=started,
                completed_at=completed,
                result={"ok": True} if status == "completed" else None,
                error_message="timed out waiting for review" if status == "failed" else None,
                retry_count=retry_count,
                max_retries=max_retries,
                created_at=created,
                updated_at=updated,
                version=1,
            )
        )
        earlier = by_repository[repository]
        # Depend on recent tasks of the same repository: older ids only, so no cycles.
        for depends_on in set(
            rng.sample(earlier[-50:], min(len(earlier[-50:]), rng.choice((0, 1, 1, 2, 3))))
        ):
            edges.append((task_id, depends_on))
        earlier.append(task_id)
    return tasks, edges


RowT = TypeVar("RowT")
BATCH_ROWS = 5_000


async def _in_batches(
    label: str,
    rows: Sequence[RowT],
    postgres: PostgresStore,
    copy: Callable[[PostgresStore, Sequence[RowT]], Awaitable[int]],
    report: Progress,
) -> None:
    report(label, 0, len(rows))
    for start in range(0, len(rows), BATCH_ROWS):
        await copy(postgres, rows[start : start + BATCH_ROWS])
        report(label, min(start + BATCH_ROWS, len(rows)), len(rows))


async def seed(
    postgres: PostgresStore,
    graph: GraphStore,
    *,
    agents: int,
    tasks: int,
    seed_value: int = 42,
    relationships_per_agent: int = 2,
    progress: Progress | None = None,
) -> SeedReport:
    report = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    rng = random.Random(seed_value)
    # Times are relative to today, so the demo always looks recent; all else is seeded.
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    agent_rows = generate_agents(rng, agents, now)
    link_rows = generate_relationships(rng, agent_rows, relationships_per_agent, now)
    task_rows, edge_rows = generate_tasks(rng, tasks, agent_rows, now)

    await _in_batches("agents", agent_rows, postgres, bulk.copy_agents, report)
    await _in_batches("relationships", link_rows, postgres, bulk.copy_relationships, report)
    await _in_batches("tasks", task_rows, postgres, bulk.copy_tasks, report)
    await _in_batches("dependencies", edge_rows, postgres, bulk.copy_dependencies, report)
    # Seeding only adds rows, so the rebuild deletes nothing (other data may share the graph).
    await rebuild(
        postgres,
        graph,
        progress=lambda stage, done, total: report(f"graph {stage}", done, total),
        prune_only=(),
    )
    return SeedReport(
        agents=len(agent_rows),
        relationships=len(link_rows),
        tasks=len(task_rows),
        dependencies=len(edge_rows),
        seconds=time.perf_counter() - started,
    )


# Metric names the demo registers: (name, unit, description, baseline, diurnal swing, noise).
METRIC_SERIES = (
    ("energy", "ratio", "Remaining energy budget, 0 to 1.", 0.7, 0.2, 0.03),
    ("integrity", "ratio", "Share of self-checks passing.", 0.95, 0.02, 0.01),
    ("entropy", "bits", "Entropy of the agent's recent decisions.", 3.0, 0.8, 0.2),
    ("void", "ratio", "Share of idle capacity.", 0.3, 0.25, 0.05),
    ("coherence", "ratio", "Agreement between plan and actions.", 0.85, 0.05, 0.02),
    ("task_duration_ms", "ms", "Mean duration of tasks finished.", 1800.0, 900.0, 150.0),
    ("tokens", "tokens", "Tokens used per minute.", 1200.0, 800.0, 120.0),
    ("error_rate", "ratio", "Share of failed calls.", 0.02, 0.01, 0.004),
)
# Points per COPY batch, at least: a batch ends on a whole hour (so no rollup bucket
# spans two batches and each batch's rollups go in by COPY), unless that takes four times
# this many points (tiny steps); then it ends anywhere, and the rollups of the buckets it
# shares with the next batch are merged instead, which is slower but as exact.
METRIC_BATCH_POINTS = 200_000
METRIC_WRITERS = 2
_MINUTE_US = 60_000_000
_HOUR_US = 3_600_000_000


@dataclass(frozen=True)
class MetricsSeedReport:
    points: int
    inserted: int
    seconds: float
    # The points cover the `days` before this minute.
    end: datetime

    @property
    def rows_per_second(self) -> float:
        return self.points / max(self.seconds, 1e-9)


@dataclass(frozen=True)
class MetricBatch:
    """Points ready for COPY (time order, no labels) and their exact rollups."""

    points: EncodedPoints
    rollups: Rollups


def generate_metric_rows(
    rng: np.random.Generator,
    agent_ids: Sequence[UUID],
    start: datetime,
    end: datetime,
    step: timedelta,
    batch: int = METRIC_BATCH_POINTS,
) -> Iterator[MetricBatch]:
    """Per agent and metric: a daily cycle peaking at a per-agent hour, Gaussian noise,
    and a few incidents (a spike that decays over about half an hour).
    The client was the bottleneck (a Python loop per point, then asyncpg encoding
    tuples), so values are made with numpy a batch at a time and laid out in binary
    COPY format directly. Since the generator knows every point, it also aggregates
    each batch into its 1-minute and 1-hour rollups, sparing the database a
    recomputation from raw."""
    per_series = int((end - start) / step)
    keys = [(agent_id, name) for agent_id in agent_ids for name, *_ in METRIC_SERIES]
    count = len(keys)
    if per_series <= 0 or count == 0:
        return
    profile = np.array([spec[3:] for _ in agent_ids for spec in METRIC_SERIES], dtype=float)
    base = profile[:, 0] * rng.uniform(0.8, 1.2, count)
    swing, noise = profile[:, 1], profile[:, 2]
    phase = rng.uniform(0.0, 2 * math.pi, count)
    # sin(angle + phase) = sin(angle) cos(phase) + cos(angle) sin(phase): per step, one
    # sin and cos for all series.
    cos_part, sin_part = swing * np.cos(phase), swing * np.sin(phase)
    # About one incident per series and day of minutes, each a bump over 30 steps, kept
    # as (step, series, size) sorted by step so a batch takes its slice.
    per = max(1, per_series // 2880)
    series_of = np.repeat(np.arange(count), per)
    size = rng.choice((-1.0, 1.0), count * per) * swing[series_of] * rng.uniform(2, 4, count * per)
    bump_step = (rng.integers(0, per_series, count * per)[:, None] + np.arange(30)).ravel()
    bump_series = np.repeat(series_of, 30)
    bump_size = (size[:, None] * np.exp(-np.arange(30) / 8)).ravel()
    order = np.argsort(bump_step, kind="stable")
    bump_step, bump_series, bump_size = bump_step[order], bump_series[order], bump_size[order]

    moments = [start + index * step for index in range(per_series)]
    stamps = binary.timestamps(moments)
    since_origin = stamps - int(binary.timestamps([ORIGIN])[0])
    angles = 2 * math.pi * ((since_origin / 1e6) % 86_400.0) / 86_400.0
    hour_starts = set((np.flatnonzero(np.diff(since_origin // _HOUR_US)) + 1).tolist())
    cuts = [0]
    for index in range(1, per_series):
        taken = (index - cuts[-1]) * count
        if taken >= batch and (taken >= 4 * batch or index in hour_starts):
            cuts.append(index)
    cuts.append(per_series)

    series = _Series(
        binary.uuids([agent_id for agent_id, _ in keys]),
        np.array([index % len(METRIC_SERIES) for index in range(count)], dtype=np.intp),
    )
    for low, high in itertools.pairwise(cuts):
        values = (
            base
            + np.sin(angles[low:high, None]) * cos_part
            + np.cos(angles[low:high, None]) * sin_part
            + rng.standard_normal((high - low, count)) * noise
        )
        first, last = np.searchsorted(bump_step, (low, high))
        np.add.at(
            values, (bump_step[first:last] - low, bump_series[first:last]), bump_size[first:last]
        )
        np.maximum(values, 0.0, out=values)
        steps = high - low
        points = binary.encode(
            ("time", "agent_id", "value", "name"),
            (
                np.repeat(stamps[low:high], count),
                np.tile(series.agents, (steps, 1)),
                values.ravel(),
            ),
            _NAMES,
            np.tile(series.names, steps),
        )
        yield MetricBatch(
            EncodedPoints(points, moments[low], moments[high - 1]),
            Rollups(
                _rollup(series, stamps[low:high], since_origin[low:high], values, _MINUTE_US),
                _rollup(series, stamps[low:high], since_origin[low:high], values, _HOUR_US),
            ),
        )


_NAMES = tuple(name for name, *_ in METRIC_SERIES)


@dataclass(frozen=True)
class _Series:
    agents: npt.NDArray[np.uint8]  # a uuid's 16 bytes per series
    names: npt.NDArray[np.intp]  # an index into _NAMES per series


def _rollup(
    series: _Series,
    stamps: npt.NDArray[np.int64],
    since_origin: npt.NDArray[np.int64],
    values: npt.NDArray[np.float64],
    width_us: int,
) -> CopyData:
    """The rollup rows of a (steps, series) block of values, in buckets `width_us` wide
    aligned to ORIGIN, as the database computes them: count, sum, min, max and the value
    at the latest time (one point per series and step, so no ties). Rows in key order
    (agent, name, bucket), as the primary key has them."""
    slots = since_origin // width_us
    starts = np.flatnonzero(np.diff(slots, prepend=slots[0] - 1))
    ends = np.append(starts[1:], len(slots)) - 1
    buckets = stamps[starts] - since_origin[starts] + slots[starts] * width_us
    count = len(series.names)
    return binary.encode(
        ("bucket", "agent_id", "count", "sum", "min", "max", "last_time", "last_value", "name"),
        (
            np.tile(buckets, count),
            np.repeat(series.agents, len(starts), axis=0),
            np.tile(ends - starts + 1, count),
            np.add.reduceat(values, starts, axis=0).T.ravel(),
            np.minimum.reduceat(values, starts, axis=0).T.ravel(),
            np.maximum.reduceat(values, starts, axis=0).T.ravel(),
            np.tile(stamps[ends], count),
            values[ends].T.ravel(),
        ),
        _NAMES,
        np.repeat(series.names, len(starts)),
    )


async def seed_metrics(
    postgres: PostgresStore,
    metrics: MetricsStore,
    *,
    days: float,
    step: timedelta = timedelta(minutes=1),
    seed_value: int = 42,
    agent_ids: Sequence[UUID] | None = None,
    progress: Progress | None = None,
    end: datetime | None = None,
) -> MetricsSeedReport:
    """Register the demo metric names and write `days` of points for every agent (or
    `agent_ids`), ending at `end` (by default the current minute), with COPY; then bring
    the rollups up to date. Re-running with the same end skips the points already there."""
    report = progress or (lambda stage, done, total: None)
    if timedelta(days=days) >= metrics.options.retention:
        raise InvalidInput("metrics-days", "must be shorter than the metrics retention period")
    for name, unit, description, *_ in METRIC_SERIES:
        await metric_names.register(postgres, name, unit=unit, description=description)
    if agent_ids is None:
        agent_ids = await bulk.agent_ids(postgres)
    if end is None:
        end = datetime.now(UTC).replace(second=0, microsecond=0)
    start = end - timedelta(days=days)
    total = int((end - start) / step) * len(agent_ids) * len(METRIC_SERIES)
    started = time.perf_counter()
    done = inserted = 0
    report("metric points", 0, total)
    batches = generate_metric_rows(np.random.default_rng(seed_value), agent_ids, start, end, step)
    # Batches are made in a thread while two connections COPY (one server process per
    # core); the lock hands out one batch at a time, so the generator stays in order.
    turn = asyncio.Lock()

    async def writer() -> None:
        nonlocal done, inserted
        while True:
            async with turn:
                made = await asyncio.to_thread(next, batches, None)
            if made is None:
                return
            result = await metrics.copy_points(made.points, made.rollups)
            # After the await: `x += await ...` would read x before another writer adds.
            inserted += result.inserted
            done += made.points.copy.rows
            report("metric points", done, total)

    await asyncio.gather(*(writer() for _ in range(METRIC_WRITERS)))
    # On the native path every batch wrote its rollups with its points, or (holding
    # points already stored) went through the folding insert. Recompute from raw only
    # when points were there already, as reruns always did: that also repairs rollups a
    # seed interrupted before its refresh left behind. TimescaleDB refreshes its own.
    report("metric rollups", 0, 1)
    if metrics.backend is not Backend.NATIVE or inserted < done:
        await metrics.refresh_rollups(start, end)
    report("metric rollups", 1, 1)
    return MetricsSeedReport(done, inserted, time.perf_counter() - started, end)
