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
from stores.graph.records import Collaborator
from stores.postgres.inputs import TaskOrder
from stores.postgres.records import Achievement, Agent, Task, TaskEvent, User, Workflow
from stores.redis.records import Session

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


def build_loaders(stores: Stores) -> Loaders:
    postgres, queries = stores.postgres, stores.graph.queries
    sessions = stores.sessions
    empty_sessions: list[Session] = []

    async def sessions_for(agent_ids: Sequence[UUID]) -> Mapping[UUID, list[Session]]:
        if sessions is None:
            return {}
        return await sessions.for_agents(agent_ids)

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
    )
