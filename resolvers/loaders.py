"""Per-request DataLoaders, named by access path.

Each batch function makes one round trip for all the keys collected in one tick
of the event loop, and returns one result per key, in key order. A new `Loaders`
is built for every operation, so caches never leak between requests or users.
"""

from __future__ import annotations

from asyncio import Future, get_event_loop
from collections import defaultdict
from collections.abc import (
    Awaitable,
    Callable,
    Coroutine,
    Hashable,
    Iterable,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from functools import cached_property, partial
from typing import Any, NamedTuple, Protocol, TypeVar
from uuid import UUID

from aiodataloader import DataLoader, Loader, dispatch_queue

from resolvers.context import Stores
from resolvers.conversation_loaders import ConversationLoaders
from resolvers.metrics import SeriesKey, load_series
from stores.embeddings import Vector
from stores.graph.knowledge import KnowledgeLink, related_of
from stores.graph.records import Collaborator
from stores.metrics import Series
from stores.postgres.inputs import TaskOrder, TasksOfEach
from stores.postgres.records import (
    Achievement,
    Agent,
    ColumnRow,
    Task,
    TaskEvent,
    User,
    Workflow,
)
from stores.postgres.tasks import AssigneeTasks
from stores.redis.events import Event
from stores.redis.records import Presence, Session
from stores.search import KnowledgeItem, Memory, SearchHit, SearchMode, SearchStore

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")
V_co = TypeVar("V_co", covariant=True)


def _loader(
    fetch: Callable[[list[K]], Awaitable[Mapping[K, V]]], default: V
) -> SettledLoader[K, V]:
    """A loader over a `fetch(keys) -> {key: value}` store method; absent keys get `default`."""

    async def batch(keys: list[K]) -> list[V]:
        found = await fetch(keys)
        return [found.get(key, default) for key in keys]

    return SettledLoader(batch)


A = TypeVar("A", bound=Hashable)


def _loader_by_argument(
    fetch: Callable[[list[K], A], Awaitable[Mapping[K, V]]], default: V
) -> SettledLoader[tuple[K, A], V]:
    """`_loader` for keys of (key, argument): one `fetch(keys, argument)` per distinct
    argument in the batch."""

    async def batch(keys: list[tuple[K, A]]) -> list[V]:
        by_argument: dict[A, list[K]] = defaultdict(list)
        for key, argument in keys:
            by_argument[argument].append(key)
        found: dict[tuple[K, A], V] = {}
        for argument, some in by_argument.items():
            values = await fetch(some, argument)
            found.update(((key, argument), value) for key, value in values.items())
        return [found.get(key, default) for key in keys]

    return SettledLoader(batch)


class TasksPageKey(NamedTuple):
    """Agent.tasks arguments: one SQL query serves every agent with the same arguments.
    With `columns`, the page holds rows of those columns, as `rows`; without, whole
    tasks. A named tuple: several are hashed per agent of a page, in C (and made in C
    by `new_tasks_page_key`)."""

    agent_id: UUID
    first: int
    statuses: tuple[str, ...] | None
    order: TaskOrder = TaskOrder.CREATED_AT_DESC
    columns: tuple[str, ...] | None = None
    # Counting every task of an agent is paid for only when `totalCount` is selected.
    with_total: bool = False


class TasksPage(NamedTuple):
    """One agent's page of tasks, one per agent of a page: a named tuple, made in C by
    `new_tasks_page` (a frozen dataclass sets each field through `object.__setattr__`)."""

    items: list[Task]
    total_count: int | None
    has_next_page: bool
    rows: Sequence[ColumnRow] = ()


_PageGroup = tuple[int, tuple[str, ...] | None, TaskOrder, tuple[str, ...] | None, bool]

# A named tuple's own constructor is a Python function (a lambda namedtuple compiles);
# a page of agents makes two keys and a page per agent, so these make them in C.
new_tasks_page_key: Callable[[tuple[Any, ...]], TasksPageKey] = partial(tuple.__new__, TasksPageKey)
new_tasks_page: Callable[[tuple[Any, ...]], TasksPage] = partial(tuple.__new__, TasksPage)
_EMPTY_TASKS_PAGE = TasksPage([], None, False)


class SettledLoader(DataLoader[K, V]):
    """A DataLoader that also answers, without a coroutine, keys it has already loaded:
    a parent that loaded its children's keys up front (`settle`) lets each child
    complete synchronously (see `Agent.tasks`, `Agent.collaborators`)."""

    def __init__(self, batch_load_fn: Callable[[list[K]], Coroutine[Any, Any, list[V]]]) -> None:
        # DataLoader's own __init__ inspects the function and makes a key function per
        # loader, for options these loaders never take: a request builds its loaders
        # afresh, and that was most of what building one cost.
        self.loop = get_event_loop()
        self.batch_load_fn = batch_load_fn
        self._cache: dict[Any, Future[V]] = {}
        self._queue = []
        self._settled: dict[K, V] = {}

    @staticmethod
    def get_cache_key(key: K) -> K:
        return key

    async def settle(self, keys: Sequence[K]) -> None:
        """Load `keys` now, in one call of the batch function, for `settled` to answer:
        a page's worth of keys without a future, a queue entry and a callback each."""
        missing = [key for key in dict.fromkeys(keys) if key not in self._settled]
        if missing:
            values = await self.batch_load_fn(missing)
            self._settled.update(zip(missing, values, strict=True))
            # From now on `load` looks among the settled keys first; until then it is
            # DataLoader's own, without a call more per key.
            self.load = self._load_settled_first  # type: ignore[method-assign]

    def settle_values(self, keys: Sequence[K], values: Sequence[V]) -> None:
        """`settle`, for values a parent's own statement read with it."""
        self._settled.update(zip(keys, values, strict=True))
        self.load = self._load_settled_first  # type: ignore[method-assign]

    def settled(self, key: K) -> V | None:
        """The value loaded for `key`, if its load has completed without an error."""
        found = self._settled.get(key)
        if found is not None:
            return found
        future = self._cache.get(self.get_cache_key(key))
        if future is None or not future.done() or future.cancelled():
            return None
        if future.exception() is not None:
            return None
        value: V = future.result()
        return value

    def settled_values(self, keys: Iterable[K]) -> list[V] | None:
        """What `settle` loaded for every one of `keys` (a None among them is a value),
        or None when any of them was not settled."""
        settled = self._settled
        try:
            return [settled[key] for key in keys]
        except KeyError:
            return None

    def _load_settled_first(self, key: K) -> Future[V]:
        # A settled key is answered from what was loaded, never fetched again.
        if key in self._settled:
            future: Future[V] = self.loop.create_future()
            future.set_result(self._settled[key])
            return future
        return super().load(key)

    def do_resolve_reject(self, key: K, future: Future[V]) -> None:
        # DataLoader's own wraps its dispatch in a coroutine and a task of its own, then
        # makes the batch's task; this makes only the batch's, two loop turns after the
        # first key as DataLoader's does, so batches collect the same keys.
        self._queue.append(Loader(key=key, future=future))
        if len(self._queue) == 1:
            self.loop.call_soon(self.loop.call_soon, dispatch_queue, self)

    def forget(self) -> None:
        """Let go of what was settled, and of the `load` that looks there first: it is
        bound to this loader, a reference cycle that would keep the loader, and all it
        loaded, until the cyclic garbage collector came by."""
        self.__dict__.pop("load", None)
        self._settled.clear()

    def clear(self, key: K) -> SettledLoader[K, V]:
        self._settled.pop(key, None)
        super().clear(key)
        return self

    def clear_all(self) -> SettledLoader[K, V]:
        self._settled.clear()
        super().clear_all()
        return self


def settle_tasks_pages(
    loader: SettledLoader[TasksPageKey, TasksPage],
    agent_ids: Sequence[UUID],
    tasks: TasksOfEach,
    pages: Sequence[AssigneeTasks[Any]],
) -> None:
    """Each agent's page of `tasks`, read with the agents (`list_columns_with_tasks`),
    settled under the key `Agent.tasks` looks for: what the loader's batch would hold."""
    loader.settle_values(
        [
            new_tasks_page_key(
                (
                    agent_id,
                    tasks.first,
                    tasks.statuses,
                    tasks.order,
                    tasks.columns,
                    tasks.with_total,
                )
            )
            for agent_id in agent_ids
        ],
        [new_tasks_page(([], page.total, page.has_more, page.items)) for page in pages],
    )


def _tasks_by_agent_loader(stores: Stores) -> SettledLoader[TasksPageKey, TasksPage]:
    tasks = stores.postgres.tasks

    async def batch(keys: list[TasksPageKey]) -> list[TasksPage]:
        # Each key's position by its page shape: the pages are put back in key order
        # without making or hashing a key again.
        groups: dict[_PageGroup, list[int]] = defaultdict(list)
        for at, key in enumerate(keys):
            groups[key.first, key.statuses, key.order, key.columns, key.with_total].append(at)
        results: list[TasksPage] = [_EMPTY_TASKS_PAGE] * len(keys)
        for (first, statuses, order, columns, with_total), positions in groups.items():
            agent_ids = [keys[at].agent_id for at in positions]
            if columns is None:
                pages = await tasks.for_assignees(
                    agent_ids, first=first, statuses=statuses, order=order, with_total=with_total
                )
                for at, agent_id in zip(positions, agent_ids, strict=True):
                    found = pages[agent_id]
                    results[at] = new_tasks_page((found.items, found.total, found.has_more, ()))
            else:
                row_pages = await tasks.columns_for_assignees(
                    agent_ids,
                    columns,
                    first=first,
                    statuses=statuses,
                    order=order,
                    with_total=with_total,
                )
                for at, agent_id in zip(positions, agent_ids, strict=True):
                    found_rows = row_pages[agent_id]
                    results[at] = new_tasks_page(
                        ([], found_rows.total, found_rows.has_more, found_rows.items)
                    )
        return results

    return SettledLoader(batch)


# An agent's id and the columns to read of it.
AgentColumnsKey = tuple[UUID, tuple[str, ...]]
# An agent's or a task's id and how many of one of its lists to read (`first`).
IdFirstKey = tuple[UUID, int]


class _ListsByFirst(Protocol[V_co]):
    """A store method reading a list for each id, at most `first` per id."""

    def __call__(self, ids: Sequence[UUID], /, *, first: int) -> Awaitable[Mapping[UUID, V_co]]: ...


def _loader_by_first(fetch: _ListsByFirst[V], default: V) -> SettledLoader[IdFirstKey, V]:
    """`_loader_by_argument` for a list with a `first`: one `fetch(ids, first=...)` per
    distinct `first` in the batch."""

    async def by_first(ids: list[UUID], first: int) -> Mapping[UUID, V]:
        return await fetch(ids, first=first)

    return _loader_by_argument(by_first, default)


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


class Loaders:
    """One request's loaders, each built on first use: most operations touch two or three
    of them, and building all of them cost about 6% of a small request's CPU."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    def clear(self) -> None:
        """Forget every loader built so far, and the records they hold. Called when an
        operation ends: graphql-core's execution context sits in a reference cycle that
        reaches the request context, so without this every record of a request waits for
        the cyclic garbage collector instead of being freed at once."""
        for name in [name for name in vars(self) if name != "_stores"]:
            loader = self.__dict__.pop(name)
            if isinstance(loader, SettledLoader):
                loader.forget()

    # Entities by id come through the entity cache when there is one: it sits below
    # every permission check, like PostgreSQL itself.

    @property
    def rows_by_id(self) -> bool:
        """Whether entities by id are best read as rows of the columns a selection shows:
        without an entity cache they come from PostgreSQL either way, and fewer columns
        cost less to send and decode; with one, a whole record cached costs no round trip
        at all."""
        return self._stores.entity_cache is None

    @cached_property
    def agent_by_id(self) -> SettledLoader[UUID, Agent | None]:
        cache = self._stores.entity_cache
        return _loader(cache.agents.by_ids if cache else self._stores.postgres.agents.by_ids, None)

    @cached_property
    def agent_columns_by_id(self) -> SettledLoader[AgentColumnsKey, tuple[Any, ...] | None]:
        """Agents as tuples of the given columns (`id` first), by (id, columns)."""
        return _loader_by_argument(self._stores.postgres.agents.columns_by_ids, None)

    @cached_property
    def task_by_id(self) -> DataLoader[UUID, Task | None]:
        cache = self._stores.entity_cache
        return _loader(cache.tasks.by_ids if cache else self._stores.postgres.tasks.by_ids, None)

    @cached_property
    def workflow_by_id(self) -> DataLoader[UUID, Workflow | None]:
        cache = self._stores.entity_cache
        fetch = cache.workflows.by_ids if cache else self._stores.postgres.workflows.by_ids
        return _loader(fetch, None)

    @cached_property
    def user_by_id(self) -> DataLoader[UUID, User | None]:
        cache = self._stores.entity_cache
        return _loader(cache.users.by_ids if cache else self._stores.postgres.users.by_ids, None)

    @cached_property
    def tasks_by_agent_id(self) -> SettledLoader[TasksPageKey, TasksPage]:
        return _tasks_by_agent_loader(self._stores)

    @cached_property
    def dependency_ids_by_task_id(self) -> DataLoader[IdFirstKey, list[UUID]]:
        """By (task id, `first`): one query per `first`."""
        return _loader_by_first(self._stores.postgres.tasks.dependencies_of, [])

    @cached_property
    def events_by_task_id(self) -> DataLoader[IdFirstKey, list[TaskEvent]]:
        """By (task id, `first`): one query per `first`."""
        return _loader_by_first(self._stores.postgres.tasks.events_of, [])

    @cached_property
    def achievements_by_agent_id(self) -> SettledLoader[IdFirstKey, list[Achievement]]:
        """By (agent id, `first`): one query per `first`."""
        return _loader_by_first(self._stores.postgres.achievements.for_agents, [])

    @cached_property
    def blocker_ids_by_task_id(self) -> DataLoader[IdFirstKey, list[UUID]]:
        """By (task id, `first`): one query per `first`."""
        return _loader_by_first(self._stores.graph.queries.blockers_of, [])

    @cached_property
    def collaborators_by_agent_id(self) -> SettledLoader[IdFirstKey, list[Collaborator]]:
        """An agent's heaviest links, by (agent id, `first`): one query per `first`."""
        return _loader_by_first(self._stores.graph.queries.collaborators_of, [])

    @cached_property
    def parent_id_by_agent_id(self) -> SettledLoader[UUID, UUID | None]:
        return _loader(self._stores.graph.queries.parents_of, None)

    @cached_property
    def child_ids_by_agent_id(self) -> SettledLoader[IdFirstKey, list[UUID]]:
        """An agent's children by name, by (agent id, `first`): one query per `first`."""
        return _loader_by_first(self._stores.graph.queries.children_of, [])

    @cached_property
    def sessions_by_agent_id(self) -> SettledLoader[UUID, list[Session]]:
        sessions = self._stores.sessions
        empty: list[Session] = []

        async def sessions_for(agent_ids: Sequence[UUID]) -> Mapping[UUID, list[Session]]:
            if sessions is None:
                return {}
            return await sessions.for_agents(agent_ids)

        return _loader(sessions_for, empty)

    @cached_property
    def metrics_by_agent_id(self) -> SettledLoader[SeriesKey, list[Series]]:
        return SettledLoader(partial(load_series, self._stores))

    @cached_property
    def knowledge_by_id(self) -> DataLoader[UUID, KnowledgeItem | None]:
        stores = self._stores

        async def knowledge_for(ids: Sequence[UUID]) -> Mapping[UUID, KnowledgeItem]:
            return await _search_of(stores).knowledge.by_ids(ids)

        return _loader(knowledge_for, None)

    @cached_property
    def related_knowledge_by_id(self) -> DataLoader[UUID, list[KnowledgeLink]]:
        graph = self._stores.graph

        async def related_for(ids: Sequence[UUID]) -> Mapping[UUID, list[KnowledgeLink]]:
            return await related_of(graph, ids)

        return _loader(related_for, [])

    @cached_property
    def grant_by_user_and_agent(self) -> DataLoader[tuple[UUID, UUID], bool]:
        """Whether a user may act as an agent (an agent grant)."""
        grants = self._stores.postgres.agent_grants

        async def batch(pairs: list[tuple[UUID, UUID]]) -> list[bool]:
            allowed = await grants.allowed(pairs)
            return [pair in allowed for pair in pairs]

        return DataLoader(batch)

    @cached_property
    def presence_by_agent_id(self) -> SettledLoader[UUID, Presence]:
        """Presence of a page of agents: one Redis round trip (`PresenceStore.read`)."""
        presence = self._stores.presence
        offline = Presence(online=False, last_seen_at=None)

        async def presence_for(agent_ids: Sequence[UUID]) -> Mapping[UUID, Presence]:
            if presence is None:
                return {}
            return await presence.read(agent_ids)

        return _loader(presence_for, offline)

    @cached_property
    def memories_by_recall(self) -> DataLoader[RecallKey, list[SearchHit[Memory]]]:
        return _recall_loader(self._stores)

    @cached_property
    def embedding_by_query_text(self) -> DataLoader[str, Vector]:
        return _query_embedding_loader(self._stores)

    @cached_property
    def conversations(self) -> ConversationLoaders:
        return ConversationLoaders(self._stores)


def build_loaders(stores: Stores) -> Loaders:
    return Loaders(stores)


def event_loaders(stores: Stores, event: Event) -> Loaders:
    """Loaders for one subscription event: fresh per event (no stale cache), and shared
    by every local subscriber of it, so N subscribers loading the same row make one
    query, not N. Sharing is safe: loaders hold records, nothing per user; resolvers
    check authorization against `info.context.principal`, which stays each subscriber's."""
    return event.memo("loaders", partial(Loaders, stores))
