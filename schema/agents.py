"""The Agent node and its cross-store fields."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Hashable, Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, overload
from uuid import UUID

import strawberry
from graphql import FieldNode, FragmentDefinitionNode, GraphQLObjectType
from graphql.execution.values import VariableValues, get_argument_values
from strawberry import relay
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.arguments import convert_arguments

from resolvers.agents import list_agent_rows, list_agent_rows_with_tasks, list_agents
from resolvers.auth import Principal, Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError
from resolvers.loaders import (
    AgentColumnsKey,
    IdFirstKey,
    Loaders,
    RecallKey,
    SettledLoader,
    TasksPage,
    TasksPageKey,
    new_tasks_page_key,
)
from resolvers.metrics import SeriesKey
from resolvers.presence import require_viewer
from schema.enums import (
    AGENT_RELATIONSHIP,
    AGENT_STATUS,
    AgentRelationshipType,
    AgentStatus,
    TaskOrder,
    TaskStatus,
)
from schema.federation import ENTITY_KEY, entity_by_reference
from schema.memories import MemoryHit, SearchMode, pick_mode
from schema.metrics import (
    BUCKET_HELP,
    MetricAggregate,
    MetricFill,
    MetricSeries,
    agent_metrics,
    agent_metrics_keys,
    settled_agent_metrics,
)
from schema.relay import CountedConnection, encode_id, node_id_field, nodes_by_ids
from schema.rows import ColumnField, NestedPages, RowReader, RowReaders
from schema.scalars import JSON
from schema.selection import (
    DocumentMemo,
    names_below,
    reads_variables,
    selected_fields,
    selected_names,
    selects,
)
from schema.settled import SETTLED_NULL, SettledNull, settled_by
from schema.tasks import Task, TaskConnection
from stores.graph.records import Collaborator
from stores.metrics import Aggregate, Fill
from stores.postgres import records
from stores.postgres.inputs import AgentFilter as StoreAgentFilter
from stores.postgres.inputs import AgentOrder as StoreAgentOrder
from stores.postgres.inputs import TaskOrder as StoreTaskOrder
from stores.postgres.inputs import TasksOfEach
from stores.postgres.pagination import PageRequest

if TYPE_CHECKING:
    from schema.achievements import Achievement
    from schema.presence import AgentPresence
    from schema.sessions import Session

Info = strawberry.Info[RequestContext, None]
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


@strawberry.input(description="Narrows an agent's tasks.")
class AgentTasksFilter:
    status: list[TaskStatus] | None = None


@strawberry.type(description="An agent collaborating or delegating with this one.")
class Collaboration:
    weight: float
    type: AgentRelationshipType
    # Fetched by `Agent.collaborators` for all links at once, when selected.
    agent: Agent | None


def _settled_tasks(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], TaskConnection | None]:
    """`Agent.tasks` for a page of agents whose tasks `agents_page` loaded: what the
    resolver would answer, worked out once per request (see schema/settled.py)."""
    read, key_of = _tasks_keys(field_nodes, fragments, arguments)
    loaders = context.loaders

    def tasks_of(agent: Agent) -> TaskConnection | None:
        # The loader is looked up each time, not held: the request's loaders are let go
        # when the operation ends (`Loaders.clear`), while the executor lives on in a
        # reference cycle until the garbage collector comes by.
        page = loaders.tasks_by_agent_id.settled(key_of(agent.record.id))
        return None if page is None else _task_connection(page, read)

    return tasks_of


def _tasks_keys(
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> tuple[RowReader[Task] | None, Callable[[UUID], TasksPageKey]]:
    """What one `Agent.tasks` field of a page of agents reads, and each agent's page
    key, from the field's nodes and converted arguments: worked out once for the page."""
    read = Task.row_reader(names_below(field_nodes, fragments, "edges", "node"))
    with_total = "totalCount" in names_below(field_nodes, fragments)
    _, first, statuses, order, columns, _ = _tasks_key(_NO_AGENT, read, with_total, **arguments)

    def key_of(agent_id: UUID) -> TasksPageKey:
        return new_tasks_page_key((agent_id, first, statuses, order, columns, with_total))

    return read, key_of


_NO_AGENT = UUID(int=0)


def _settled_collaborators(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], list[Collaboration] | None]:
    """`Agent.collaborators` for a page of agents whose links, and the agents they name,
    `agents_page` loaded (`_prefetch_collaborators`): what the resolver would answer."""
    first: int = arguments["first"]
    loaders = context.loaders
    read = _linked_agents_reader(loaders, field_nodes, fragments)

    def collaborators_of(agent: Agent) -> list[Collaboration] | None:
        # Loaders looked up each time, not held: see `_settled_tasks`.
        links = loaders.collaborators_by_agent_id.settled((agent.record.id, first))
        if links is None:
            return None
        if read is None:
            return _collaborations(links, {})
        agents = _settled_agents(loaders, [link.agent_id for link in links], read)
        return None if agents is None else _collaborations(links, agents)

    return collaborators_of


def _linked_agents_reader(
    loaders: Loaders,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
) -> AgentReader | None:
    """How one `collaborators` field reads the agents it links to; None when it does not
    select `agent`."""
    if "agent" not in names_below(field_nodes, fragments):
        return None
    return agent_reader(loaders, names_below(field_nodes, fragments, "agent"))


def _collaborations(
    links: list[Collaborator], agents: Mapping[UUID, Agent | None]
) -> list[Collaboration]:
    return [
        Collaboration(
            weight=link.weight,
            type=AGENT_RELATIONSHIP[link.type],
            agent=agents.get(link.agent_id),
        )
        for link in links
    ]


def _settled_parent(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], Agent | SettledNull | None]:
    """`Agent.parent` for a page of agents whose parents `agents_page` loaded
    (`_prefetch_parents`): what the resolver would answer."""
    loaders = context.loaders

    def parent_of(agent: Agent) -> Agent | SettledNull | None:
        # Loaders looked up each time, not held: see `_settled_tasks`.
        found = loaders.parent_id_by_agent_id.settled_values([agent.record.id])
        if found is None:
            return None
        parent_id = found[0]
        if parent_id is None:
            return SETTLED_NULL
        agents = _settled_agents(loaders, [parent_id], _WHOLE_AGENTS)
        if agents is None:
            return None
        return agents[parent_id] or SETTLED_NULL

    return parent_of


def _settled_children(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], list[Agent] | None]:
    """`Agent.children` for a page of agents whose children `agents_page` loaded
    (`_prefetch_children`): what the resolver would answer."""
    first: int = arguments["first"]
    loaders = context.loaders

    def children_of(agent: Agent) -> list[Agent] | None:
        child_ids = loaders.child_ids_by_agent_id.settled((agent.record.id, first))
        if child_ids is None:
            return None
        agents = _settled_agents(loaders, child_ids, _WHOLE_AGENTS)
        # As `Agent.load_many`: the agents that exist, in order.
        return None if agents is None else [a for a in map(agents.get, child_ids) if a]

    return children_of


def _settled_presence(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], AgentPresence | None]:
    """`Agent.presence` for a page of agents whose presence `agents_page` read
    (`_prefetch_presence`): what the resolver would answer. A caller the resolver
    refuses is left to it, which reports the refusal at each agent's path."""
    from schema.presence import AgentPresence

    loaders = context.loaders
    try:
        require_viewer(context)
    except ClientError:
        return lambda agent: None

    def presence_of(agent: Agent) -> AgentPresence | None:
        agent_id = agent.record.id
        found = loaders.presence_by_agent_id.settled(agent_id)
        return None if found is None else AgentPresence.from_record(agent_id, found)

    return presence_of


def _settled_achievements(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], list[Achievement] | None]:
    """`Agent.achievements` for a page of agents whose achievements `agents_page` read
    (`_prefetch_achievements`): what the resolver would answer."""
    from schema.achievements import Achievement

    first: int = arguments["first"]
    loaders = context.loaders

    def achievements_of(agent: Agent) -> list[Achievement] | None:
        found = loaders.achievements_by_agent_id.settled((agent.record.id, first))
        return None if found is None else [Achievement.from_record(item) for item in found]

    return achievements_of


def _require_sessions_reader(principal: Principal, agent_id: UUID) -> None:
    """An agent's sessions are for operators and up, and for the agent itself."""
    if principal.agent_id != agent_id:
        require(principal, at_least=Role.OPERATOR)


def _settled_sessions(
    context: RequestContext,
    field_nodes: list[FieldNode],
    fragments: Mapping[str, FragmentDefinitionNode],
    arguments: Mapping[str, Any],
) -> Callable[[Agent], list[Session] | None]:
    """`Agent.sessions` for a page of agents whose sessions `agents_page` loaded
    (`_prefetch_sessions`), each agent's permission checked as the resolver checks it;
    a refusal is left to the resolver, which reports it at the agent's path."""
    from schema.sessions import Session

    first: int = arguments["first"]
    principal = context.principal
    loaders = context.loaders

    def sessions_of(agent: Agent) -> list[Session] | None:
        try:
            _require_sessions_reader(principal, agent.record.id)
        except ClientError:
            return None
        found = loaders.sessions_by_agent_id.settled(agent.record.id)
        if found is None:
            return None
        return [Session.from_record(session) for session in found[:first]]

    return sessions_of


@strawberry.type(description="An autonomous worker on the platform.", directives=[ENTITY_KEY])
class Agent(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    name: str
    role: str
    status: AgentStatus
    capabilities: list[str]
    tags: list[str]
    notes: str
    metadata: JSON
    created_at: datetime
    updated_at: datetime
    version: int = strawberry.field(description="Send it back as `expectedVersion` to update.")
    record: strawberry.Private[records.Agent]

    @classmethod
    def from_record(cls, agent: records.Agent) -> Agent:
        return cls(
            id=str(agent.id),
            _id=encode_id("Agent", agent.id),
            name=agent.name,
            role=agent.role,
            status=AGENT_STATUS[agent.status],
            capabilities=list(agent.capabilities),
            tags=list(agent.tags),
            notes=agent.notes,
            metadata=agent.metadata,
            created_at=agent.created_at,
            updated_at=agent.updated_at,
            version=agent.version,
            record=agent,
        )

    @classmethod
    async def load(cls, info: Info, agent_id: UUID | None) -> Agent | None:
        if agent_id is None:
            return None
        found = await info.context.loaders.agent_by_id.load(agent_id)
        return cls.from_record(found) if found else None

    @classmethod
    async def load_many(cls, info: Info, agent_ids: Iterable[UUID]) -> list[Agent]:
        found = await info.context.loaders.agent_by_id.load_many(list(agent_ids))
        return [cls.from_record(agent) for agent in found if agent is not None]

    @classmethod
    async def load_map(
        cls, info: Info, agent_ids: Iterable[UUID], *paths: tuple[str, ...], settle: bool = False
    ) -> dict[UUID, Agent | None]:
        """Agents by id, for parents that hand them to their children ready-made. With
        `paths` (where the agents sit below the current field), a selection of columns
        only reads just those columns (schema/rows.py). `settle`, for a parent with no
        siblings to batch with (a root field): the agents are read at once, in one call
        of the loader's batch, without a future and a callback per agent."""
        ids = list(dict.fromkeys(agent_ids))
        names = frozenset().union(*(selected_names(info, *path) for path in paths))
        loaders = info.context.loaders
        reader = agent_reader(loaders, names if paths else None)
        found: list[Any] = await (
            _load_all(loaders.agent_columns_by_id, reader.keys(ids), settle)
            if reader.read is not None
            else _load_all(loaders.agent_by_id, ids, settle)
        )
        return reader.agents(ids, found)

    @classmethod
    async def resolve_reference(cls, info: Info, id: str) -> Agent | None:
        return await entity_by_reference(cls, info, id)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Agent | None]:
        loaders = info.context.loaders
        # `node(id:)` and `nodes(ids:)` (and federation's `_entities`): the selection on
        # them is the agents'.
        read = agent_reader(loaders, selected_names(info)).read
        if read is None:
            return await nodes_by_ids(loaders.agent_by_id, node_ids, cls.from_record)
        return await nodes_by_ids(loaders.agent_columns_by_id, node_ids, read, read.columns)

    @strawberry.field(
        description="The first tasks assigned to this agent (PostgreSQL, one query for a whole "
        "page of agents). To page further, use `tasks(filter: {assigneeId: ...})`."
    )
    @settled_by(_settled_tasks)
    def tasks(
        self,
        info: Info,
        first: int = 10,
        filter: AgentTasksFilter | None = None,
        order_by: TaskOrder = TaskOrder.CREATED_AT_DESC,
    ) -> Annotated[TaskConnection, strawberry.lazy("schema.tasks")]:
        # A page that selects only the tasks' own columns reads just those, as rows.
        read = Task.row_reader(selected_names(info, "edges", "node"))
        with_total = "totalCount" in selected_names(info)
        key = _tasks_key(self.record.id, read, with_total, first, filter, order_by)
        loader = info.context.loaders.tasks_by_agent_id
        page = loader.settled(key)
        if page is not None:
            # Loaded by the parent for its whole page (`agent_page`): no coroutine.
            return _task_connection(page, read)
        # An awaitable, which the executor awaits like an async resolver's result.
        return _load_task_connection(loader, key, read)  # type: ignore[return-value]

    @strawberry.field(
        description="Agents linked by COLLABORATES_WITH or DELEGATES_TO (Neo4j), heaviest "
        "link first, at most `first` of them (one query for a whole page of agents)."
    )
    @settled_by(_settled_collaborators)
    async def collaborators(self, info: Info, first: int = 10) -> list[Collaboration] | None:
        # Answered without a round trip when the page loaded them (`agents_page`).
        loader = info.context.loaders.collaborators_by_agent_id
        links = await loader.load((self.record.id, first))
        agents = (
            await Agent.load_map(info, [link.agent_id for link in links], ("agent",))
            if selects(info, "agent")
            else {}
        )
        return _collaborations(links, agents)

    @strawberry.field(description="The agent above this one in the hierarchy (Neo4j).")
    @settled_by(_settled_parent)
    async def parent(self, info: Info) -> Agent | None:
        return await load_parent(info, self.record.id)

    @strawberry.field(
        description="Agents directly below this one (Neo4j), by name, at most `first` of "
        "them (one query for a whole page of agents)."
    )
    @settled_by(_settled_children)
    async def children(self, info: Info, first: int = 10) -> list[Agent] | None:
        return await load_children(info, self.record.id, first)

    @strawberry.field(
        description="Live sessions bound to this agent (Redis), the `first` oldest. "
        "Operators and up, and the agent itself."
    )
    @settled_by(_settled_sessions)
    async def sessions(
        self, info: Info, first: int = 10
    ) -> list[Annotated[Session, strawberry.lazy("schema.sessions")]] | None:
        return await load_sessions(info, self.record.id, first)

    @strawberry.field(
        description="Live presence (Redis): one round trip for a whole page of agents; null "
        "with STORE_UNAVAILABLE while Redis is down. `status` is the durable state."
    )
    @settled_by(_settled_presence)
    async def presence(
        self, info: Info
    ) -> Annotated[AgentPresence, strawberry.lazy("schema.presence")] | None:
        from schema.presence import presence_field

        return await presence_field(info, self.record.id)

    @strawberry.field(
        description="Achievements awarded to this agent, newest first, at most `first` of "
        "them (one query for a whole page of agents)."
    )
    @settled_by(_settled_achievements)
    async def achievements(
        self, info: Info, first: int = 10
    ) -> list[Annotated[Achievement, strawberry.lazy("schema.achievements")]]:
        return await load_achievements(info, self.record.id, first)

    @strawberry.field(
        description="One of this agent's metrics, bucketed (one query for a whole page of "
        "agents; reads the 1-minute or 1-hour rollup when the bucket allows). " + BUCKET_HELP
    )
    @settled_by(settled_agent_metrics)
    async def metrics(
        self,
        info: Info,
        name: str,
        from_: Annotated[datetime, strawberry.argument(name="from")],
        to: datetime,
        bucket: str = "1h",
        aggregate: MetricAggregate = Aggregate.AVG,  # type: ignore[valid-type]
        fill: MetricFill = Fill.NONE,  # type: ignore[valid-type]
        labels: Annotated[
            JSON | None,
            strawberry.argument(description="Only points whose labels contain these (reads raw)."),
        ] = None,
    ) -> MetricSeries | None:
        return await agent_metrics(
            info,
            self.record.id,
            name=name,
            from_=from_,
            to=to,
            bucket=bucket,
            aggregate=aggregate,
            fill=fill,
            labels=labels,
        )

    @strawberry.field(
        description="This agent's memories that best match a query text or vector (one SQL "
        "query for a whole page of agents; the text is embedded once per request). For the "
        "agent itself, users allowed to act as it, operators and admins."
    )
    async def recall(
        self,
        info: Info,
        query: str | None = None,
        vector: list[float] | None = None,
        mode: SearchMode | None = None,
        first: int = 5,
    ) -> list[MemoryHit] | None:
        from resolvers.search import query_vector, require_memory_reader

        await require_memory_reader(info.context, self.record.id)
        store_mode = pick_mode(mode, query)
        text, checked = await query_vector(info.context, store_mode, query, vector)
        key = RecallKey(
            self.record.id, store_mode, text, tuple(checked) if checked else None, first
        )
        hits = await info.context.loaders.memories_by_recall.load(key)
        return [MemoryHit.from_hit(hit) for hit in hits]


async def load_parent(info: Info, agent_id: UUID) -> Agent | None:
    """`Agent.parent` when the page did not load it: one Neo4j query for every agent of
    the response, the parents through the entity cache."""
    parent_id = await info.context.loaders.parent_id_by_agent_id.load(agent_id)
    return await Agent.load(info, parent_id)


async def load_children(info: Info, agent_id: UUID, first: int) -> list[Agent]:
    """`Agent.children` when the page did not load them, batched as `load_parent`."""
    child_ids = await info.context.loaders.child_ids_by_agent_id.load((agent_id, first))
    return await Agent.load_many(info, child_ids)


async def load_achievements(info: Info, agent_id: UUID, first: int) -> list[Achievement]:
    """`Agent.achievements` when the page did not load them: one query per `first` for
    every agent of the response."""
    from schema.achievements import Achievement

    found = await info.context.loaders.achievements_by_agent_id.load((agent_id, first))
    return [Achievement.from_record(item) for item in found]


async def load_sessions(info: Info, agent_id: UUID, first: int) -> list[Session]:
    """`Agent.sessions` when the page did not load them: one Redis round trip for every
    agent of the response."""
    from schema.sessions import Session

    _require_sessions_reader(info.context.principal, agent_id)
    found = await info.context.loaders.sessions_by_agent_id.load(agent_id)
    return [Session.from_record(session) for session in found[:first]]


def _tasks_key(
    agent_id: UUID,
    read: RowReader[Task] | None,
    with_total: bool,
    first: int = 10,
    filter: AgentTasksFilter | None = None,
    order_by: TaskOrder = TaskOrder.CREATED_AT_DESC,
) -> TasksPageKey:
    status = filter.status if filter else None
    statuses = tuple(sorted(s.value for s in status)) if status else None
    columns = read.columns if read is not None else None
    order = StoreTaskOrder[order_by.name]
    return TasksPageKey(agent_id, first, statuses, order, columns, with_total)


def _task_connection(page: TasksPage, read: RowReader[Task] | None) -> TaskConnection:
    if read is not None:
        return TaskConnection.from_rows(page.rows, page.total_count, page.has_next_page, read)
    return TaskConnection.from_task_list(page.items, page.total_count, page.has_next_page)


async def _load_task_connection(
    loader: SettledLoader[TasksPageKey, TasksPage], key: TasksPageKey, read: RowReader[Task] | None
) -> TaskConnection:
    return _task_connection(await loader.load(key), read)


async def agents_page(
    info: Info,
    filter: StoreAgentFilter,
    order: StoreAgentOrder,
    request: PageRequest,
    *,
    with_total: bool,
) -> AgentConnection:
    """`Query.agents`: a page of agents, as rows of the selected columns when the
    selection allows (schema/rows.py), with what their `tasks` fields select loaded for
    all of them first (one query per distinct `tasks` selection, as their loader would
    batch it), so each agent's `tasks` completes without a coroutine of its own."""
    read = _READERS.reader(selected_names(info, "edges", "node"))
    tasks = None
    if read is not None:
        read_with_page = _tasks_read_with_page(info)
        if read_with_page is not None:
            tasks, read_tasks = read_with_page
            rows, pages, settle = await list_agent_rows_with_tasks(
                info.context, filter, order, request, read.columns, tasks, with_total=with_total
            )
            # The planned executor completes each agent's `tasks` from its page directly;
            # the pages are settled for `Agent.tasks` only when the agents are made.
            nested = NestedPages("tasks", read_tasks, pages)
            connection = AgentConnection.from_rows_page(rows, read, nested, before_made=settle)
        else:
            rows = await list_agent_rows(
                info.context, filter, order, request, read.columns, with_total=with_total
            )
            connection = AgentConnection.from_rows_page(rows, read)
    else:
        page = await list_agents(info.context, filter, order, request, with_total=with_total)
        # Later loads of these agents by id (a task's assignee) need no round trip.
        loader = info.context.loaders.agent_by_id
        for agent in page.items:
            loader.prime(agent.id, agent)
        connection = AgentConnection.from_page(page, Agent.from_record)
    if connection.edges:
        # Made only if a prefetch needs them: rows' edges are made when first read.
        agents = _PageAgents(connection.edges)
        loads = [
            load
            for load in (
                _prefetch_tasks(info, agents) if tasks is None else None,
                _prefetch_collaborators(info, agents),
                _prefetch_metrics(info, agents),
                _prefetch_parents(info, agents),
                _prefetch_children(info, agents),
                _prefetch_sessions(info, agents),
                _prefetch_presence(info, agents),
                _prefetch_achievements(info, agents),
            )
            if load is not None
        ]
        # Neither raises: a field whose load failed loads again and reports its own error.
        if len(loads) == 1:
            await loads[0]
        elif loads:
            await asyncio.gather(*loads)
    return connection


class _PageAgents(Sequence[Agent]):
    """A page's agents for its prefetches, made from its edges on first use: a page of
    rows whose nodes no prefetch reads (its `tasks` came with it) never makes them."""

    def __init__(self, edges: Sequence[relay.Edge[Agent]]) -> None:
        self._edges = edges
        self._agents: list[Agent] | None = None

    def _made(self) -> list[Agent]:
        if self._agents is None:
            # Iterating rows' edges makes them (and their nodes) on first use.
            self._agents = [edge.node for edge in self._edges]
        return self._agents

    @overload
    def __getitem__(self, index: int) -> Agent: ...

    @overload
    def __getitem__(self, index: slice) -> list[Agent]: ...

    def __getitem__(self, index: int | slice) -> Agent | list[Agent]:
        return self._made()[index]

    def __len__(self) -> int:
        return len(self._edges)


def _tasks_read_with_page(info: Info) -> tuple[TasksOfEach, RowReader[Task]] | None:
    """What the page's `tasks` field reads of each agent, and how its rows read, when
    the page's own statement can read it too: one such field, reading rows of columns,
    with arguments the store takes. Anything else (two `tasks` fields, whole tasks,
    arguments refused) is left to the loader, and a refused argument to the field,
    which reports it at its path."""
    fields = _page_fields(info, "tasks")
    if len(fields) != 1:
        return None
    nodes = fields[0]

    def tasks_of_each() -> tuple[TasksOfEach, RowReader[Task]] | None:
        try:
            arguments = _page_field_arguments(info, "tasks", nodes[0])
            read, key_of = _tasks_keys(nodes, info._raw_info.fragments, arguments)
            key = key_of(_NO_AGENT)
            if key.columns is None or read is None:
                return None
            of_each = TasksOfEach(key.columns, key.first, key.statuses, key.order, key.with_total)
            return of_each, read
        except Exception:
            return None

    if reads_variables(nodes[0]):
        return tasks_of_each()
    # Without variables in its arguments, the answer is the document's: worked out once.
    return _TASKS_OF_EACH.get(nodes, (), tasks_of_each)


_TASKS_OF_EACH: DocumentMemo[tuple[TasksOfEach, RowReader[Task]] | None] = DocumentMemo(
    max_entries=1000
)


def _page_fields(info: Info, name: str) -> list[list[FieldNode]]:
    """The nodes of each `name` field the page's agents select, by response key."""
    return [
        nodes
        for nodes in selected_fields(info, "edges", "node").values()
        if nodes[0].name.value == name
    ]


def _page_field_arguments(info: Info, name: str, node: FieldNode) -> dict[str, Any]:
    """The arguments of an Agent field of the page as its own resolver gets them
    (variables, defaults, Strawberry's conversion)."""
    raw = info._raw_info
    agent_type = raw.schema.get_type("Agent")
    assert isinstance(agent_type, GraphQLObjectType)
    field_def = agent_type.fields[name]
    definition = field_def.extensions[GraphQLCoreConverter.DEFINITION_BACKREF]
    # Strawberry's info holds the coerced variables as a plain dict, not graphql-core's
    # `VariableValues`, which reads a variable's value from `coerced` (its sources
    # matter to fragment variables only).
    variables: Any = raw.variable_values
    if not isinstance(variables, VariableValues):
        variables = VariableValues({}, variables)
    coerced = get_argument_values(field_def, node, variables)
    return convert_arguments(
        coerced,
        definition.arguments,
        scalar_registry=info.schema.schema_converter.scalar_registry,
        config=info.schema.config,
        info=info,
    )


def _prefetch_tasks(info: Info, agents: Sequence[Agent]) -> Coroutine[Any, Any, None] | None:
    fields = _page_fields(info, "tasks")
    return _load_tasks(info, agents, fields) if fields else None


async def _load_tasks(info: Info, agents: Sequence[Agent], fields: list[list[FieldNode]]) -> None:
    def key_of_field(nodes: list[FieldNode]) -> Callable[[UUID], TasksPageKey]:
        arguments = _page_field_arguments(info, "tasks", nodes[0])
        return _tasks_keys(nodes, info._raw_info.fragments, arguments)[1]

    loader = info.context.loaders.tasks_by_agent_id
    await _settle_page_fields(loader, agents, fields, key_of_field)


def _prefetch_metrics(info: Info, agents: Sequence[Agent]) -> Coroutine[Any, Any, None] | None:
    fields = _page_fields(info, "metrics")
    return _load_metrics(info, agents, fields) if fields else None


async def _load_metrics(info: Info, agents: Sequence[Agent], fields: list[list[FieldNode]]) -> None:
    """Every agent's series for each `metrics` field of the page, in one query per
    distinct question, as the field's loader would batch them
    (`schema/metrics.py: settled_agent_metrics` answers each agent)."""

    def key_of_field(nodes: list[FieldNode]) -> Callable[[UUID], SeriesKey]:
        arguments = _page_field_arguments(info, "metrics", nodes[0])
        return agent_metrics_keys(info.context, arguments)[0]

    loader = info.context.loaders.metrics_by_agent_id
    await _settle_page_fields(loader, agents, fields, key_of_field)


async def _settle_page_fields(
    loader: SettledLoader[K, Any],
    agents: Sequence[Agent],
    fields: list[list[FieldNode]],
    key_of_field: Callable[[list[FieldNode]], Callable[[UUID], K]],
) -> list[K]:
    """Every agent's key of each of the page's `fields`, settled in one call; returns
    the keys. A field whose keys cannot be worked out (its arguments refused: a bad
    bucket, a page too large) is left to its resolver, which reports that at its own
    path; and if the load fails, each field loads again and reports its own error."""
    # A row object has a record (its id) when these fields are selected (`RECORD_ID_FIELDS`).
    agent_ids = [agent.record.id for agent in agents]
    keys: list[K] = []
    for nodes in fields:
        try:
            key_of = key_of_field(nodes)
        except Exception:
            continue
        keys.extend(map(key_of, agent_ids))
    with contextlib.suppress(Exception):
        await loader.settle(keys)
    return keys


def _first_keys(info: Info, name: str) -> Callable[[list[FieldNode]], Callable[[UUID], IdFirstKey]]:
    """`key_of_field` for a page's list field of agents whose only argument is `first`."""

    def key_of_field(nodes: list[FieldNode]) -> Callable[[UUID], IdFirstKey]:
        first: int = _page_field_arguments(info, name, nodes[0])["first"]
        return lambda agent_id: (agent_id, first)

    return key_of_field


def _prefetch_collaborators(
    info: Info, agents: Sequence[Agent]
) -> Coroutine[Any, Any, None] | None:
    fields = _page_fields(info, "collaborators")
    return _load_collaborators(info, agents, fields) if fields else None


async def _load_collaborators(
    info: Info, agents: Sequence[Agent], fields: list[list[FieldNode]]
) -> None:
    """Every agent's links for each `collaborators` field of the page, in one Neo4j
    query per distinct `first`, then the agents they name, in one PostgreSQL query per
    distinct selection: what the fields' loaders would batch, without a coroutine,
    future and load per agent (`_settled_collaborators` answers each agent)."""
    agent_ids = [agent.record.id for agent in agents]
    loaders = info.context.loaders
    fragments = info._raw_info.fragments
    key_of_field = _first_keys(info, "collaborators")
    wanted: list[tuple[list[IdFirstKey], AgentReader | None]] = []
    for nodes in fields:
        try:
            key_of = key_of_field(nodes)
        except Exception:
            continue  # see `_settle_page_fields`
        wanted.append(
            ([key_of(i) for i in agent_ids], _linked_agents_reader(loaders, nodes, fragments))
        )
    try:
        await loaders.collaborators_by_agent_id.settle([key for keys, _ in wanted for key in keys])
        columns: list[AgentColumnsKey] = []
        whole: list[UUID] = []
        for keys, reader in wanted:
            if reader is None:
                continue
            linked = [
                link.agent_id
                for key in keys
                for link in loaders.collaborators_by_agent_id.settled(key) or ()
            ]
            if reader.read is not None:
                columns.extend(reader.keys(linked))
            else:
                whole.extend(linked)
        if columns:
            await loaders.agent_columns_by_id.settle(columns)
        if whole:
            await loaders.agent_by_id.settle(whole)
    except Exception:
        pass


def _prefetch_parents(info: Info, agents: Sequence[Agent]) -> Coroutine[Any, Any, None] | None:
    fields = _page_fields(info, "parent")
    return _load_parents(info, agents, fields) if fields else None


async def _load_parents(info: Info, agents: Sequence[Agent], fields: list[list[FieldNode]]) -> None:
    """Every agent's parent id in one Neo4j query, then the parents, whole through the
    entity cache as `Agent.load` reads them (`_settled_parent` answers each agent)."""
    agent_ids = [agent.record.id for agent in agents]
    loaders = info.context.loaders
    with contextlib.suppress(Exception):  # see `_settle_page_fields`
        await loaders.parent_id_by_agent_id.settle(agent_ids)
        found = loaders.parent_id_by_agent_id.settled_values(agent_ids) or []
        await loaders.agent_by_id.settle([i for i in found if i is not None])


def _prefetch_presence(info: Info, agents: Sequence[Agent]) -> Coroutine[Any, Any, None] | None:
    if not _page_fields(info, "presence"):
        return None
    try:
        require_viewer(info.context)
    except ClientError:
        return None  # refused by each agent's resolver, without a round trip
    return _load_presence(info, agents)


async def _load_presence(info: Info, agents: Sequence[Agent]) -> None:
    """Every agent's presence in one Redis round trip, as the field's loader would
    batch it, without a coroutine, future and load per agent (`_settled_presence`
    answers each agent)."""
    with contextlib.suppress(Exception):  # see `_settle_page_fields`
        await info.context.loaders.presence_by_agent_id.settle(
            [agent.record.id for agent in agents]
        )


def _prefetch_achievements(info: Info, agents: Sequence[Agent]) -> Coroutine[Any, Any, None] | None:
    fields = _page_fields(info, "achievements")
    return _load_achievements(info, agents, fields) if fields else None


async def _load_achievements(
    info: Info, agents: Sequence[Agent], fields: list[list[FieldNode]]
) -> None:
    """Every agent's achievements for each `achievements` field of the page, in one
    query per distinct `first`, as the field's loader would batch them
    (`_settled_achievements` answers each agent)."""
    loader = info.context.loaders.achievements_by_agent_id
    await _settle_page_fields(loader, agents, fields, _first_keys(info, "achievements"))


def _prefetch_children(info: Info, agents: Sequence[Agent]) -> Coroutine[Any, Any, None] | None:
    fields = _page_fields(info, "children")
    return _load_children(info, agents, fields) if fields else None


async def _load_children(
    info: Info, agents: Sequence[Agent], fields: list[list[FieldNode]]
) -> None:
    """Every agent's children's ids in one Neo4j query per distinct `first`, then the
    children, whole through the entity cache as `Agent.load_many` reads them
    (`_settled_children` answers each agent)."""
    loaders = info.context.loaders
    keys = await _settle_page_fields(
        loaders.child_ids_by_agent_id, agents, fields, _first_keys(info, "children")
    )
    children = loaders.child_ids_by_agent_id.settled_values(keys) or []
    with contextlib.suppress(Exception):  # see `_settle_page_fields`
        await loaders.agent_by_id.settle([i for ids in children for i in ids])


def _prefetch_sessions(info: Info, agents: Sequence[Agent]) -> Coroutine[Any, Any, None] | None:
    if not _page_fields(info, "sessions"):
        return None
    principal = info.context.principal
    # Only the agents whose sessions the caller may see: a refused field loads nothing.
    readable = []
    for agent in agents:
        with contextlib.suppress(ClientError):
            _require_sessions_reader(principal, agent.record.id)
            readable.append(agent.record.id)
    return _load_sessions(info, readable) if readable else None


async def _load_sessions(info: Info, agent_ids: list[UUID]) -> None:
    """Every readable agent's sessions in one Redis round trip (`_settled_sessions`)."""
    with contextlib.suppress(Exception):  # see `_settle_page_fields`
        await info.context.loaders.sessions_by_agent_id.settle(agent_ids)


# Agent's fields that are a column (see schema/rows.py), by GraphQL name.
COLUMN_FIELDS = {
    "name": ColumnField("name", "name"),
    "role": ColumnField("role", "role"),
    "status": ColumnField("status", "status", AGENT_STATUS),
    "capabilities": ColumnField("capabilities", "capabilities", list),
    "tags": ColumnField("tags", "tags", list),
    "notes": ColumnField("notes", "notes"),
    "metadata": ColumnField("metadata", "metadata"),
    "createdAt": ColumnField("created_at", "created_at"),
    "updatedAt": ColumnField("updated_at", "updated_at"),
    "version": ColumnField("version", "version"),
}
# Agent's resolver fields that read nothing of `self.record` but its id, so a row
# carrying the id answers them (schema/rows.py `RecordId`); tests/unit/
# test_schema_rows.py reads their source to keep this true.
RECORD_ID_FIELDS = frozenset(
    (
        "tasks",
        "collaborators",
        "metrics",
        "parent",
        "children",
        "sessions",
        "presence",
        "achievements",
        "recall",
    )
)
_READERS = RowReaders(Agent, COLUMN_FIELDS, record_fields=RECORD_ID_FIELDS)


async def _load_all(loader: SettledLoader[K, V], keys: list[K], settle: bool) -> list[V]:
    """`loader.load_many(keys)`; `settle`d, in one call of its batch at once."""
    if settle:
        await loader.settle(keys)
        found = loader.settled_values(keys)
        if found is not None:
            return found
    return await loader.load_many(keys)


class AgentReader:
    """How a field reads agents it hands to its children: the columns their selection
    names, as rows (`read`), or whole records when the selection needs more (or when
    `names` is None)."""

    __slots__ = ("read",)

    def __init__(self, names: frozenset[str] | None) -> None:
        self.read = None if names is None else _READERS.reader(names)

    def keys(self, ids: Iterable[UUID]) -> list[AgentColumnsKey]:
        """`agent_columns_by_id` keys of `ids`; only when `read` is set."""
        assert self.read is not None
        columns = self.read.columns
        return [(agent_id, columns) for agent_id in ids]

    def agents(self, ids: Sequence[UUID], found: Sequence[Any]) -> dict[UUID, Agent | None]:
        """Agents by id, from what the loader `read` names found for `ids`."""
        read = self.read
        if read is not None:
            return {
                agent_id: read(row) if row else None
                for agent_id, row in zip(ids, found, strict=True)
            }
        return {
            agent_id: Agent.from_record(agent) if agent else None
            for agent_id, agent in zip(ids, found, strict=True)
        }


# Whole records, through the entity cache: how `Agent.load` reads agents.
_WHOLE_AGENTS = AgentReader(None)


def agent_reader(loaders: Loaders, names: frozenset[str] | None) -> AgentReader:
    """How agents by id are read for a selection of `names` (None: whole records)."""
    return AgentReader(names) if names is not None and loaders.rows_by_id else _WHOLE_AGENTS


def _settled_agents(
    loaders: Loaders, ids: list[UUID], reader: AgentReader
) -> dict[UUID, Agent | None] | None:
    """`Agent.load_map` for agents `_load_collaborators` settled; None if any was not."""
    ids = list(dict.fromkeys(ids))
    found: list[Any] | None = (
        loaders.agent_columns_by_id.settled_values(reader.keys(ids))
        if reader.read is not None
        else loaders.agent_by_id.settled_values(ids)
    )
    return None if found is None else reader.agents(ids, found)


@strawberry.type
class AgentConnection(CountedConnection[Agent]):
    pass
