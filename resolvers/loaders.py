"""Per-request DataLoaders, named by access path.

Each batch function makes one round trip for all the keys collected in one tick
of the event loop, and returns one result per key, in key order. A new `Loaders`
is built for every operation, so caches never leak between requests or users.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from uuid import UUID

from aiodataloader import DataLoader

from resolvers.context import Stores
from resolvers.metrics import SeriesKey, series_loader
from stores.embeddings import Vector
from stores.graph.knowledge import KnowledgeLink, related_of
from stores.graph.records import Collaborator
from stores.metrics import Series
from stores.postgres.inputs import TaskOrder
from stores.postgres.records import Achievement, Agent, Task, TaskEvent, User, Workflow
from stores.redis.records import Session
from stores.search import KnowledgeItem, Memory, SearchHit, SearchMode, SearchStore

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


def _loader(fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], default: V) -> DataLoader[K, V]:
    """A loader over a `fetch(keys) -> {key: value}` store method; absent keys get `default`."""

    async def batch(keys: list[K]) -> list[V]:
        found = await fetch(keys)
        return [found.get(key, default) for key in keys]

    return DataLoader(batch)


@dataclass(frozen=True, slots=True)
class TasksPageKey:
    """Agent.tasks arguments: one SQL query serves every agent with the same arguments."""

    agent_id: UUID
    first: int
    statuses: tuple[str, ...] | None
    order: TaskOrder = TaskOrder.CREATED_AT_DESC


@dataclass(frozen=True, slots=True)
class TasksPage:
    items: list[Task]
    total_count: int


def _tasks_by_agent_loader(stores: Stores) -> DataLoader[TasksPageKey, TasksPage]:
    async def batch(keys: list[TasksPageKey]) -> list[TasksPage]:
        groups: dict[tuple[int, tuple[str, ...] | None, TaskOrder], list[UUID]] = defaultdict(list)
        for key in keys:
            groups[(key.first, key.statuses, key.order)].append(key.agent_id)
        results: dict[TasksPageKey, TasksPage] = {}
        for (first, statuses, order), agent_ids in groups.items():
            pages = await stores.postgres.tasks.for_assignees(
                agent_ids, first=first, statuses=statuses, order=order
            )
            for agent_id in agent_ids:
                items, total = pages.get(agent_id, ([], 0))
                results[TasksPageKey(agent_id, first, statuses, order)] = TasksPage(items, total)
        return [results[key] for key in keys]

    return DataLoader(batch)


@dataclass(frozen=True, slots=True)
class RecallKey:
    """Agent.recall arguments: one SQL query serves every agent with the same arguments."""

    agent_id: UUID
    mode: SearchMode
    text: str | None
    vector: tuple[float, ...] | None
    first: int


def _search_of(stores: Stores) -> SearchStore:
    if stores.search is None:
        raise RuntimeError("no search store: pass `search=` to `Stores` in create_app")
    return stores.search


def _recall_loader(stores: Stores) -> DataLoader[RecallKey, list[SearchHit[Memory]]]:
    async def batch(keys: list[RecallKey]) -> list[list[SearchHit[Memory]]]:
        groups: dict[tuple[SearchMode, str | None, tuple[float, ...] | None, int], list[UUID]]
        groups = defaultdict(list)
        for key in keys:
            groups[(key.mode, key.text, key.vector, key.first)].append(key.agent_id)
        results: dict[RecallKey, list[SearchHit[Memory]]] = {}
        for (mode, text, vector, first), agent_ids in groups.items():
            found = await _search_of(stores).memories.recall(
                agent_ids,
                mode=mode,
                text=text,
                vector=list(vector) if vector else None,
                first=first,
            )
            for agent_id in agent_ids:
                results[RecallKey(agent_id, mode, text, vector, first)] = found.get(agent_id, [])
        return [results[key] for key in keys]

    return DataLoader(batch)


def _query_embedding_loader(stores: Stores) -> DataLoader[str, Vector]:
    """Query texts of one request, embedded in one call and each only once."""

    async def batch(texts: list[str]) -> list[Vector]:
        if stores.embedder is None:
            raise RuntimeError("no embedder: pass `embedder=` to `Stores` in create_app")
        return await stores.embedder.embed(texts)

    return DataLoader(batch)


@dataclass
class Loaders:
    agent_by_id: DataLoader[UUID, Agent | None]
    task_by_id: DataLoader[UUID, Task | None]
    workflow_by_id: DataLoader[UUID, Workflow | None]
    user_by_id: DataLoader[UUID, User | None]
    tasks_by_agent_id: DataLoader[TasksPageKey, TasksPage]
    dependency_ids_by_task_id: DataLoader[UUID, list[UUID]]
    events_by_task_id: DataLoader[UUID, list[TaskEvent]]
    achievements_by_agent_id: DataLoader[UUID, list[Achievement]]
    blocker_ids_by_task_id: DataLoader[UUID, list[UUID]]
    collaborators_by_agent_id: DataLoader[UUID, list[Collaborator]]
    parent_id_by_agent_id: DataLoader[UUID, UUID | None]
    child_ids_by_agent_id: DataLoader[UUID, list[UUID]]
    sessions_by_agent_id: DataLoader[UUID, list[Session]]
    metrics_by_agent_id: DataLoader[SeriesKey, list[Series]]
    knowledge_by_id: DataLoader[UUID, KnowledgeItem | None]
    related_knowledge_by_id: DataLoader[UUID, list[KnowledgeLink]]
    memories_by_recall: DataLoader[RecallKey, list[SearchHit[Memory]]]
    embedding_by_query_text: DataLoader[str, Vector]


def build_loaders(stores: Stores) -> Loaders:
    postgres, queries = stores.postgres, stores.graph.queries
    sessions = stores.sessions
    empty_sessions: list[Session] = []

    async def sessions_for(agent_ids: Sequence[UUID]) -> Mapping[UUID, list[Session]]:
        if sessions is None:
            return {}
        return await sessions.for_agents(agent_ids)

    async def knowledge_for(ids: Sequence[UUID]) -> Mapping[UUID, KnowledgeItem]:
        return await _search_of(stores).knowledge.by_ids(ids)

    async def related_for(ids: Sequence[UUID]) -> Mapping[UUID, list[KnowledgeLink]]:
        return await related_of(stores.graph, ids)

    return Loaders(
        agent_by_id=_loader(postgres.agents.by_ids, None),
        task_by_id=_loader(postgres.tasks.by_ids, None),
        workflow_by_id=_loader(postgres.workflows.by_ids, None),
        user_by_id=_loader(postgres.users.by_ids, None),
        tasks_by_agent_id=_tasks_by_agent_loader(stores),
        dependency_ids_by_task_id=_loader(postgres.tasks.dependencies_of, []),
        events_by_task_id=_loader(postgres.tasks.events_of, []),
        achievements_by_agent_id=_loader(postgres.achievements.for_agents, []),
        blocker_ids_by_task_id=_loader(queries.blockers_of, []),
        collaborators_by_agent_id=_loader(queries.collaborators_of, []),
        parent_id_by_agent_id=_loader(queries.parents_of, None),
        child_ids_by_agent_id=_loader(queries.children_of, []),
        sessions_by_agent_id=_loader(sessions_for, empty_sessions),
        metrics_by_agent_id=series_loader(stores),
        knowledge_by_id=_loader(knowledge_for, None),
        related_knowledge_by_id=_loader(related_for, []),
        memories_by_recall=_recall_loader(stores),
        embedding_by_query_text=_query_embedding_loader(stores),
    )
