"""`polygraph seed`: a realistic, deterministic demo dataset, loaded with COPY.

The same `--seed` gives the same rows, ids included. Agents form a hierarchy
(orchestrators at the top), collaborate in small clusters and delegate down the
tree; tasks belong to repositories, depend only on older tasks of the same
repository (so the dependency graph is a DAG), and have statuses, times and
retries that agree with the state machine. Neo4j is filled by a graph rebuild.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TypeVar
from uuid import UUID

from resolvers.graph_rebuild import rebuild
from stores import GraphStore, PostgresStore
from stores.postgres import bulk
from stores.postgres.records import Agent, AgentRelationship, Task

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
