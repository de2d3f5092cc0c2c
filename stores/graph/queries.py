"""Read queries over the graph projection: one round trip per call, whatever the number of ids.

Relationship types and path bounds cannot be Cypher parameters, so the few
query texts that need them are built from `AgentEdge` members and range-checked
integers only; every value travels as a parameter.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from uuid import UUID

import neo4j
from neo4j import AsyncManagedTransaction, AsyncSession
from neo4j.exceptions import ClientError, DriverError, Neo4jError, TransientError

from stores import roundtrips, slow
from stores.errors import InvalidInput, StoreRefused, StoreTimeout, StoreUnavailable
from stores.graph import tracing
from stores.graph.records import (
    AgentDegree,
    AgentEdge,
    Collaborator,
    CriticalPath,
    NeighbourEdge,
    Neighbourhood,
    NeighbourNode,
)
from stores.ids import parse_id

if TYPE_CHECKING:
    from stores.graph.store import GraphStore

# A named tuple's own constructor is Python (`__new__` with keyword binding): this is
# what it does, in C.
_new_tuple = tuple.__new__

_STORE = "neo4j"
# Tasks in these states no longer hold anything up.
DONE_TASK_STATUSES = ("completed", "cancelled")
MAX_NEIGHBOURHOOD_DEPTH = 5
MAX_PATH_DEPTH = 15
MAX_FIRST = 1000
MAX_NEIGHBOURHOOD_NODES = 1000
# `AgentEdge(value)` is slow enough to show in a page of hundreds of links.
_EDGES = {edge.value: edge for edge in AgentEdge}


@asynccontextmanager
async def translate_errors(within: float) -> AsyncIterator[None]:
    """Driver errors become store errors: timeouts and transient failures mean
    unavailable; anything else the server refused (a DatabaseError such as a value
    too large to index fails the same way on every retry)."""
    try:
        yield
    except ClientError as exc:
        if "TransactionTimedOut" in (exc.code or ""):
            raise StoreTimeout(_STORE, f"query did not finish within {within:g}s") from exc
        raise StoreRefused(exc.message or str(exc)) from exc
    except TransientError as exc:
        raise StoreUnavailable(_STORE, exc.message or str(exc)) from exc
    except Neo4jError as exc:
        raise StoreRefused(exc.message or str(exc)) from exc


# What a read runs its query on: a session (auto-commit) or a managed transaction.
_Runner = AsyncSession | AsyncManagedTransaction


async def _fetch(tx: _Runner, text: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = await tx.run(text, params)
    return await result.data()


async def _fetch_collected(tx: _Runner, text: Any, params: dict[str, Any]) -> Any:
    result = await tx.run(text, params)
    # Values straight from the record: `data()` would walk every nested value again.
    record = await result.single(strict=False)
    return record[0] if record is not None else []


async def read_collected(graph: GraphStore, text: str, **params: Any) -> list[Any]:
    """Run a read whose one record holds every row in one list (`RETURN collect(...)`);
    empty when the query returns no record.

    Batched reads return hundreds of rows; one record instead of one Bolt message per
    row is about three times faster to receive with the Python driver.
    """
    rows: list[Any] = await _execute_read(graph, _fetch_collected, text, params)
    return rows


async def _execute_read(
    graph: GraphStore,
    fetch: Callable[[_Runner, Any, dict[str, Any]], Awaitable[Any]],
    text: str,
    params: dict[str, Any],
) -> Any:
    """One counted round trip: a read transaction with the store's timeout and retries,
    driver errors turned into store errors.

    A caller cancelled mid-read (a sibling field failed, the client left) does not
    cancel the read: the driver, cancelled while it opens a connection, leaves the
    socket open for the garbage collector. The read finishes in the background and
    its connection goes back to the pool."""
    read = asyncio.ensure_future(_read(graph, fetch, text, params))
    try:
        return await asyncio.shield(read)
    except asyncio.CancelledError:
        read.add_done_callback(_settled)
        raise


async def _read(
    graph: GraphStore,
    fetch: Callable[[_Runner, Any, dict[str, Any]], Awaitable[Any]],
    text: str,
    params: dict[str, Any],
) -> Any:
    timeout = graph.query_timeout
    started = time.perf_counter()
    retry = False
    try:
        with tracing.span("read", text):
            # Auto-commit: RUN and PULL go in one exchange with the server, where a
            # managed transaction adds a BEGIN and a COMMIT, each an exchange of its
            # own (a third of a neighbourhood read's CPU). A read needs no more.
            async with graph.session(read=True) as session, translate_errors(timeout):
                try:
                    result = await fetch(session, neo4j.Query(text, timeout=timeout), params)
                except (Neo4jError, DriverError) as exc:
                    if not exc.is_retryable():
                        raise
                    retry = True
            if retry:
                # A server gone or a leader changing: the driver's managed retries,
                # which an auto-commit read does not have, from here.
                async with graph.session() as session, translate_errors(timeout):
                    work = neo4j.unit_of_work(timeout=timeout)(fetch)
                    result = await session.execute_read(work, text, params)
    finally:
        # Counted failed or not; timed as the driver saw it, for the latency histogram.
        roundtrips.record(_STORE, seconds=time.perf_counter() - started)
    slow.observe(_STORE, time.perf_counter() - started, text, threshold_s=graph.slow_query_s)
    return result


def _settled(read: asyncio.Future[Any]) -> None:
    # Nobody awaits a read whose caller was cancelled; its outcome is dropped.
    if not read.cancelled():
        read.exception()


class GraphQueries:
    """Traversals over agents, tasks and workflows; attached to `GraphStore` as `queries`."""

    __slots__ = ("_graph",)

    def __init__(self, graph: GraphStore) -> None:
        self._graph = graph

    async def collaborators_of(
        self, agent_ids: Sequence[UUID], *, first: int
    ) -> dict[UUID, list[Collaborator]]:
        """COLLABORATES_WITH in either direction and DELEGATES_TO outgoing, heaviest
        first, at most `first` per agent."""
        ids = _unique(agent_ids)
        found: dict[UUID, list[Collaborator]] = {agent_id: [] for agent_id in ids}
        if not ids or first <= 0:
            return found
        # Each row's own agent mapped back by its text, not parsed again.
        by_text = {str(i): i for i in ids}
        rows = await read_collected(self._graph, COLLABORATORS, ids=list(by_text), first=first)
        for agent_id, other, edge_type, weight in rows:
            found[by_text[agent_id]].append(
                Collaborator(parse_id(other), float(weight), _EDGES[edge_type])
            )
        return found

    async def parents_of(self, agent_ids: Sequence[UUID]) -> dict[UUID, UUID | None]:
        ids = _unique(agent_ids)
        found: dict[UUID, UUID | None] = dict.fromkeys(ids)
        if not ids:
            return found
        by_text = {str(i): i for i in ids}
        for agent_id, parent in await read_collected(self._graph, _PARENTS, ids=list(by_text)):
            found[by_text[agent_id]] = parse_id(parent)
        return found

    async def children_of(self, agent_ids: Sequence[UUID], *, first: int) -> dict[UUID, list[UUID]]:
        """Agents directly below each, by name, at most `first` per agent."""
        ids = _unique(agent_ids)
        found: dict[UUID, list[UUID]] = {agent_id: [] for agent_id in ids}
        if not ids or first <= 0:
            return found
        by_text = {str(i): i for i in ids}
        for agent_id, child in await read_collected(
            self._graph, _CHILDREN, ids=list(by_text), first=first
        ):
            found[by_text[agent_id]].append(parse_id(child))
        return found

    async def neighbourhood(
        self,
        agent_id: UUID,
        *,
        depth: int,
        types: Sequence[str] | None = None,
        limit: int = MAX_NEIGHBOURHOOD_NODES,
    ) -> Neighbourhood:
        """Agents within `depth` hops in either direction, nearest first (at most `limit`
        besides the centre), and every edge of the chosen types among them.

        Empty when the agent is not in the graph.
        """
        _check_range("depth", depth, 1, MAX_NEIGHBOURHOOD_DEPTH)
        _check_range("limit", limit, 1, MAX_NEIGHBOURHOOD_NODES)
        text = _neighbourhood_query(_edge_types(types), depth)
        found = await read_collected(self._graph, text, id=str(agent_id), limit=limit)
        if not found:
            return Neighbourhood([], [])
        nodes, edges = found
        # Each id parsed once: an edge's ends are among the nodes.
        ids = {node_id: parse_id(node_id) for node_id, _ in nodes}
        return Neighbourhood(
            [_new_tuple(NeighbourNode, (ids[node_id], distance)) for node_id, distance in nodes],
            [
                _new_tuple(
                    NeighbourEdge,
                    (
                        ids.get(source) or parse_id(source),
                        ids.get(target) or parse_id(target),
                        _EDGES[edge_type],
                        weight,
                    ),
                )
                for source, target, edge_type, weight in edges
            ],
        )

    async def shortest_path(
        self,
        from_id: UUID,
        to_id: UUID,
        *,
        types: Sequence[str] | None = None,
        max_depth: int = 10,
    ) -> list[UUID] | None:
        """Agent ids along one shortest path, ends included, ignoring direction;
        None when there is none within `max_depth` hops."""
        _check_range("max_depth", max_depth, 1, MAX_PATH_DEPTH)
        text = _shortest_path_query(_edge_types(types), max_depth)
        rows = await self._read(text, source=str(from_id), target=str(to_id))
        return [parse_id(i) for i in rows[0]["ids"]] if rows else None

    async def blockers_of(self, task_ids: Sequence[UUID], *, first: int) -> dict[UUID, list[UUID]]:
        """Tasks each task depends on, directly or transitively, that are not yet
        completed or cancelled: the first `first` by id per task."""
        ids = _unique(task_ids)
        found: dict[UUID, list[UUID]] = {task_id: [] for task_id in ids}
        if not ids or first <= 0:
            return found
        rows = await read_collected(
            self._graph,
            _BLOCKERS,
            ids=[str(i) for i in ids],
            done=DONE_TASK_STATUSES,
            first=first,
        )
        for task_id, blockers in rows:
            # In id order already: a UUID's text sorts as the UUID does.
            found[parse_id(task_id)] = [parse_id(b) for b in blockers]
        return found

    async def dependents_of(
        self, task_id: UUID, *, first: int, transitive: bool = True
    ) -> list[UUID]:
        """Tasks that depend on this one (directly, or through other tasks): the first
        `first` by id."""
        if first <= 0:
            return []
        text = _DEPENDENTS_TRANSITIVE if transitive else _DEPENDENTS_DIRECT
        found = await read_collected(self._graph, text, id=str(task_id), first=first)
        return [parse_id(i) for i in found]

    async def critical_path(self, workflow_id: UUID) -> CriticalPath | None:
        """The chain of steps with the largest summed estimate, in execution order.

        None when the workflow is not in the graph. Steps on a cycle (which a valid
        workflow does not have) are left out.
        """
        rows = await self._read(_WORKFLOW_STEPS, id=str(workflow_id))
        if not rows:
            return None
        estimates: dict[str, float] = {}
        successors: dict[str, list[str]] = {}
        for row in rows:
            if row["step"] is not None:
                estimates[row["step"]] = float(row["estimate"] or 0.0)
                successors[row["step"]] = row["next"]
        path = _heaviest_path(estimates, successors)
        return CriticalPath(path, sum(estimates[s] for s in path))

    async def task_critical_path(self, task_id: UUID) -> list[UUID]:
        """The longest chain of unfinished tasks below `task_id` along DEPENDS_ON, in the
        order they have to be done (deepest first, the direct dependency last). Empty
        when nothing unfinished holds the task up or it is not in the graph."""
        rows = await self._read(_OPEN_DEPENDENCIES, id=str(task_id), done=DONE_TASK_STATUSES)
        root = str(task_id)
        successors = {row["task"]: row["next"] for row in rows}
        if root not in successors:
            return []
        chain = _longest_chain(root, successors)
        return [parse_id(t) for t in reversed(chain[1:])]

    async def most_connected(
        self, *, first: int, types: Sequence[str] | None = None
    ) -> list[AgentDegree]:
        """Agents with the most edges of the chosen types (either direction), ties by id.

        Scans every agent: meant for dashboards, not per-request fan-out.
        """
        _check_range("first", first, 1, MAX_FIRST)
        text = _most_connected_query(_edge_types(types))
        rows = await self._read(text, first=first)
        return [AgentDegree(parse_id(row["id"]), row["degree"]) for row in rows]

    async def _read(self, text: str, **params: Any) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = await _execute_read(self._graph, _fetch, text, params)
        return rows


def _unique(ids: Iterable[UUID]) -> list[UUID]:
    return list(dict.fromkeys(ids))


def _check_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidInput(field, f"must be between {low} and {high}, got {value}")


def _edge_types(types: Sequence[str] | None) -> tuple[AgentEdge, ...]:
    if types is None:
        return tuple(AgentEdge)
    chosen: list[AgentEdge] = []
    for name in types:
        try:
            edge = AgentEdge(name)
        except ValueError:
            allowed = ", ".join(AgentEdge)
            raise InvalidInput(
                "types", f"unknown relationship type {name!r}; use {allowed}"
            ) from None
        if edge not in chosen:
            chosen.append(edge)
    if not chosen:
        raise InvalidInput("types", "give at least one relationship type, or none for all")
    # Sorted so that every order of the same types shares one cached query text.
    return tuple(sorted(chosen))


def _type_pattern(types: tuple[AgentEdge, ...]) -> str:
    return "|".join(edge.value for edge in types)


@lru_cache(maxsize=64)
def _neighbourhood_query(types: tuple[AgentEdge, ...], depth: int) -> str:
    pattern = _type_pattern(types)
    return f"""
        MATCH (s:Agent {{id: $id}})
        OPTIONAL MATCH p = ANY SHORTEST (s)-[:{pattern}]-{{1,{depth}}}(n:Agent)
        WHERE n <> s
        WITH s, n, length(p) AS distance
        ORDER BY distance, n.id
        LIMIT $limit
        WITH s, [x IN collect({{node: n, distance: distance}}) WHERE x.node IS NOT NULL] AS found
        WITH [{{node: s, distance: 0}}] + found AS hood
        WITH hood, [h IN hood | h.node] AS members
        CALL (members) {{
            UNWIND members AS a
            MATCH (a)-[r:{pattern}]->(b:Agent)
            WHERE b IN members
            WITH a.id AS source, b.id AS target, type(r) AS type, r.weight AS weight
            ORDER BY source, target, type
            RETURN collect([source, target, type, weight]) AS edges
        }}
        // One value, [nodes, edges], for `read_collected`.
        RETURN [[h IN hood | [h.node.id, h.distance]], edges] AS found
    """


@lru_cache(maxsize=64)
def _shortest_path_query(types: tuple[AgentEdge, ...], max_depth: int) -> str:
    return f"""
        MATCH (a:Agent {{id: $source}}), (b:Agent {{id: $target}})
        MATCH p = ANY SHORTEST (a)-[:{_type_pattern(types)}]-{{0,{max_depth}}}(b)
        RETURN [n IN nodes(p) | n.id] AS ids
    """


@lru_cache(maxsize=8)
def _most_connected_query(types: tuple[AgentEdge, ...]) -> str:
    # A single-relationship COUNT is answered from the degree store, not by expanding.
    return f"""
        MATCH (a:Agent)
        WITH a, COUNT {{ (a)-[:{_type_pattern(types)}]-() }} AS degree
        WHERE degree > 0
        RETURN a.id AS id, degree
        ORDER BY degree DESC, id
        LIMIT $first
    """


# The floor in bench/ runs it too, so both do the same store work.
COLLABORATORS = """
    UNWIND $ids AS id
    MATCH (a:Agent {id: id})
    CALL (a) {
        CALL (a) {
            MATCH (a)-[r:COLLABORATES_WITH]-(b:Agent)
            RETURN b.id AS other, r.weight AS weight, type(r) AS type
            UNION ALL
            MATCH (a)-[r:DELEGATES_TO]->(b:Agent)
            RETURN b.id AS other, r.weight AS weight, type(r) AS type
        }
        WITH other, type, max(weight) AS weight
        ORDER BY weight DESC, other, type
        // Per agent: an agent linked to thousands returns its heaviest `first`.
        LIMIT $first
        RETURN other, type, weight
    }
    RETURN collect([id, other, type, weight]) AS rows
"""

_PARENTS = """
    UNWIND $ids AS id
    MATCH (p:Agent)-[:PARENT_OF]->(:Agent {id: id})
    WITH id, min(p.id) AS parent
    RETURN collect([id, parent]) AS rows
"""

_CHILDREN = """
    UNWIND $ids AS id
    MATCH (a:Agent {id: id})
    CALL (a) {
        MATCH (a)-[:PARENT_OF]->(c:Agent)
        WITH c
        ORDER BY c.name, c.id
        // Per agent: an agent above thousands returns its first `first` by name.
        LIMIT $first
        RETURN c.id AS child, c.name AS name
    }
    WITH id, child, name
    ORDER BY id, name, child
    RETURN collect([id, child]) AS rows
"""

_BLOCKERS = """
    UNWIND $ids AS id
    MATCH (t:Task {id: id})-[:DEPENDS_ON*1..]->(d:Task)
    WHERE NOT d.status IN $done
    // DISTINCT right after the expansion keeps it a pruning breadth-first search:
    // each reachable task is visited once, not once per path.
    WITH DISTINCT id, d
    ORDER BY id, d.id
    WITH id, collect(d.id)[..$first] AS blockers
    RETURN collect([id, blockers]) AS rows
"""

# As in _BLOCKERS, the DISTINCT right after the expansion keeps it a pruning
# breadth-first search; ORDER BY with LIMIT keeps only the first `first` (Top).
_DEPENDENTS_TRANSITIVE = """
    MATCH (d:Task)-[:DEPENDS_ON*1..]->(:Task {id: $id})
    WITH DISTINCT d.id AS id
    ORDER BY id
    LIMIT $first
    RETURN collect(id) AS rows
"""

_DEPENDENTS_DIRECT = """
    MATCH (d:Task)-[:DEPENDS_ON]->(:Task {id: $id})
    WITH DISTINCT d.id AS id
    ORDER BY id
    LIMIT $first
    RETURN collect(id) AS rows
"""

_WORKFLOW_STEPS = """
    MATCH (w:Workflow {id: $id})
    OPTIONAL MATCH (w)-[:HAS_STEP]->(s:Step)
    OPTIONAL MATCH (s)-[:PRECEDES]->(n:Step)<-[:HAS_STEP]-(w)
    RETURN s.id AS step, s.estimate AS estimate, collect(n.id) AS next
"""

# The root plus every unfinished task below it, each with its unfinished direct
# dependencies; chains through finished tasks are cut in Python.
_OPEN_DEPENDENCIES = """
    MATCH (t:Task {id: $id})
    OPTIONAL MATCH (t)-[:DEPENDS_ON*1..]->(d:Task)
    WHERE NOT d.status IN $done
    WITH t, collect(DISTINCT d) AS open
    UNWIND [t] + open AS n
    OPTIONAL MATCH (n)-[:DEPENDS_ON]->(m:Task)
    WHERE m IN open
    RETURN n.id AS task, collect(m.id) AS next
"""


def _heaviest_path(estimates: dict[str, float], successors: dict[str, list[str]]) -> list[str]:
    """Longest path by summed estimate through a DAG (Kahn order, then a backward pass)."""
    indegree = dict.fromkeys(estimates, 0)
    for step in estimates:
        for nxt in successors[step]:
            indegree[nxt] += 1
    order: list[str] = []
    ready = sorted(s for s, d in indegree.items() if d == 0)
    while ready:
        step = ready.pop(0)
        order.append(step)
        for nxt in sorted(successors[step]):
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    acyclic = set(order)
    best: dict[str, float] = {}
    via: dict[str, str | None] = {}
    for step in reversed(order):
        best[step], via[step] = estimates[step], None
        for nxt in sorted(n for n in successors[step] if n in acyclic):
            if estimates[step] + best[nxt] > best[step]:
                best[step], via[step] = estimates[step] + best[nxt], nxt
    if not best:
        return []
    current: str | None = max(sorted(best), key=lambda s: best[s])
    path: list[str] = []
    while current is not None:
        path.append(current)
        current = via[current]
    return path


def _longest_chain(root: str, successors: dict[str, list[str]]) -> list[str]:
    """Longest chain from `root` by number of tasks (an iterative depth-first pass, so
    deep chains do not hit the recursion limit); a cycle is cut where it closes."""
    length: dict[str, int] = {}
    following: dict[str, str | None] = {}
    on_path = {root}
    stack: list[tuple[str, Iterator[str]]] = [(root, iter(sorted(successors.get(root, []))))]
    while stack:
        task, children = stack[-1]
        child = next(children, None)
        if child is None:
            stack.pop()
            on_path.discard(task)
            length[task], following[task] = 1, None
            # Only finished children count, so `following` can never lead back up.
            for nxt in sorted(successors.get(task, [])):
                if nxt in length and 1 + length[nxt] > length[task]:
                    length[task], following[task] = 1 + length[nxt], nxt
        elif child not in length and child not in on_path:
            on_path.add(child)
            stack.append((child, iter(sorted(successors.get(child, [])))))
    chain: list[str] = []
    current: str | None = root
    while current is not None:
        chain.append(current)
        current = following[current]
    return chain
