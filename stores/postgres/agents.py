"""Agents and the relationships between them.

Every write changes its rows, appends an audit row and an outbox row in one
transaction; the agent graph in Neo4j follows from the outbox.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID, uuid4

from asyncpg import Record

from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres.inputs import (
    UNSET,
    AgentFilter,
    AgentInput,
    AgentOrder,
    AgentPatch,
    TasksOfEach,
    check_json_object,
    check_text,
    like_pattern,
)
from stores.postgres.options import PgConnection
from stores.postgres.outbox import enqueue_all
from stores.postgres.pagination import Page, PageRequest, Params, fetch_page, ordering
from stores.postgres.records import JSON, Agent, AgentRelationship, WriteContext
from stores.postgres.task_events import unassign_tasks_of
from stores.postgres.tasks import AssigneeTasks, assignee_page, tasks_of_each
from stores.postgres.writes import (
    Refusals,
    check_version,
    claim_idempotency_key,
    settle_idempotency_key,
    to_json,
    write_audit,
    write_transaction,
)

T = TypeVar("T")

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

AGENT_STATUSES = ("idle", "active", "busy", "offline", "error")
RELATIONSHIP_TYPES = ("COLLABORATES_WITH", "DELEGATES_TO")
MAX_METADATA_BYTES = 64 * 1024
MAX_LABELS = 100

_COLUMNS = (
    "id, name, role, status, capabilities, tags, notes, metadata, parent_id,"
    " created_at, updated_at, version"
)
# What `columns_by_ids` may be asked to read.
_READABLE_COLUMNS = frozenset(_COLUMNS.replace(",", " ").split())
_RELATIONSHIP_COLUMNS = "source_id, target_id, type, weight, created_at"
# Serialises parent changes, so two concurrent moves cannot jointly close a loop.
_PARENT_LOCK = 0x706F6C79_70617265  # "polypare"

_ORDERS = {
    AgentOrder.CREATED_AT_ASC: ordering(
        "agents.created", ("created_at", "timestamp"), ("id", "uuid")
    ),
    AgentOrder.CREATED_AT_DESC: ordering(
        "agents.-created", ("created_at", "timestamp"), ("id", "uuid"), descending=True
    ),
    AgentOrder.NAME_ASC: ordering("agents.name", ("name", "text"), ("id", "uuid")),
    AgentOrder.NAME_DESC: ordering(
        "agents.-name", ("name", "text"), ("id", "uuid"), descending=True
    ),
}


class AgentRepository:
    """Agents in PostgreSQL, the source of truth for the agent graph."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, Agent]:
        """The agents that exist among `ids`, in one query."""
        if not ids:
            return {}
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM agents WHERE id = ANY($1::uuid[])", list(ids)
            )
        return {row["id"]: _agent(row) for row in rows}

    async def columns_by_ids(
        self, ids: Sequence[UUID], columns: Sequence[str]
    ) -> dict[UUID, tuple[Any, ...]]:
        """The agents that exist among `ids`, each a tuple of `columns` in that order
        (`id` among them), in one query: for selections that show a few columns."""
        if not set(columns) <= _READABLE_COLUMNS or "id" not in columns:
            raise ValueError(f"not agent columns: {columns!r}")
        if not ids:
            return {}
        at = columns.index("id")
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {', '.join(columns)} FROM agents WHERE id = ANY($1::uuid[])", list(ids)
            )
        return {row[at]: tuple(row) for row in rows}

    async def count(self) -> int:
        async with self._store.read_connection() as conn:
            total: int = await conn.fetchval("SELECT count(*) FROM agents")
        return total

    async def create(self, ctx: WriteContext, data: AgentInput) -> Agent:
        values = _checked({column: getattr(data, column) for column in _WRITABLE})
        agent_id = uuid4()
        async with write_transaction(self._store, _refusals(values)) as conn:
            replay = await claim_idempotency_key(conn, ctx, "agent.create", {"id": str(agent_id)})
            if replay is not None:
                return await _get(conn, UUID(replay["id"]))
            row = await conn.fetchrow(
                f"INSERT INTO agents (id, name, role, status, capabilities, tags, notes,"
                f" metadata, parent_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
                f" RETURNING {_COLUMNS}",
                agent_id,
                *(values[column] for column in _WRITABLE),
            )
            assert row is not None
            agent = _agent(row)
            await write_audit(
                conn,
                ctx,
                "create",
                "agent",
                agent.id,
                None,
                agent,
                outbox=("agent.upserted", _upserted(agent)),
            )
        return agent

    async def update(
        self, ctx: WriteContext, agent_id: UUID, patch: AgentPatch, *, expected_version: int | None
    ) -> Agent:
        """Change the given fields; a stale `expected_version` is a Conflict."""
        given = {
            column: value for column in _WRITABLE if (value := getattr(patch, column)) is not UNSET
        }
        values = _checked(given)
        async with write_transaction(self._store, _refusals(values)) as conn:
            replay = await claim_idempotency_key(
                conn, ctx, f"agent.update {agent_id}", {"id": str(agent_id)}
            )
            if replay is not None:
                return await _get(conn, agent_id)
            if values.get("parent_id") is not None:
                # Before the row lock: parent moves queue here instead of each holding a
                # row the other's foreign-key check needs.
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARENT_LOCK)
            current = await _lock(conn, agent_id, expected_version)
            changes = {
                column: value
                for column, value in values.items()
                if _comparable(value) != _comparable(getattr(current, column))
            }
            if not changes:
                return current
            if changes.get("parent_id") is not None:
                await _refuse_parent_cycle(conn, current, changes["parent_id"])
            params = Params([agent_id, current.version])
            assignments = ", ".join(
                f"{column} = {params(value)}" for column, value in changes.items()
            )
            row = await conn.fetchrow(
                f"UPDATE agents SET {assignments}, version = version + 1, updated_at = now()"
                f" WHERE id = $1 AND version = $2 RETURNING {_COLUMNS}",
                *params.values,
            )
            assert row is not None, "the row is locked, so its version cannot have moved"
            agent = _agent(row)
            await write_audit(
                conn,
                ctx,
                "update",
                "agent",
                agent.id,
                current,
                agent,
                outbox=("agent.upserted", _upserted(agent)),
            )
        return agent

    async def delete(
        self, ctx: WriteContext, agent_id: UUID, *, expected_version: int | None
    ) -> Agent:
        """Delete an agent; returns it as it was. Its tasks become unassigned and its
        children lose their parent, each with a new version."""
        async with write_transaction(self._store) as conn:
            replay = await claim_idempotency_key(
                conn, ctx, f"agent.delete {agent_id}", {"id": str(agent_id)}
            )
            if replay is not None:
                return _agent_from_json(replay["deleted"])
            current = await _lock(conn, agent_id, expected_version, deleting=True)
            # Done here rather than by the foreign keys' SET NULL, so the rows get new
            # versions, the tasks their events, and the graph its outbox rows.
            await unassign_tasks_of(conn, ctx, agent_id)
            children = await conn.fetch(
                "UPDATE agents SET parent_id = NULL, version = version + 1, updated_at = now()"
                f" WHERE parent_id = $1 RETURNING {_COLUMNS}",
                agent_id,
            )
            await enqueue_all(
                conn, "agent.upserted", [_upserted(_agent(child)) for child in children], ctx
            )
            await conn.execute("DELETE FROM agents WHERE id = $1", agent_id)
            await write_audit(
                conn,
                ctx,
                "delete",
                "agent",
                agent_id,
                current,
                None,
                outbox=("agent.deleted", {"id": str(agent_id)}),
            )
            await settle_idempotency_key(
                conn, ctx, {"id": str(agent_id), "deleted": to_json(current)}
            )
        return current

    async def relate(
        self,
        ctx: WriteContext,
        source_id: UUID,
        target_id: UUID,
        type: str,
        weight: float = 1.0,
    ) -> AgentRelationship:
        """Create the relationship, or change its weight if it exists."""
        _check_relationship(source_id, target_id, type)
        if isinstance(weight, bool) or not math.isfinite(weight) or weight < 0:
            raise InvalidInput("weight", "must be a finite number, 0 or more")
        key = {"source_id": str(source_id), "target_id": str(target_id), "type": type}
        refusals: Refusals = {
            "agent_relationships_source_id_fkey": lambda: NotFound(
                "agent", source_id, field="sourceId"
            ),
            "agent_relationships_target_id_fkey": lambda: NotFound(
                "agent", target_id, field="targetId"
            ),
        }
        async with write_transaction(self._store, refusals) as conn:
            operation = f"agent.relate {source_id} {type} {target_id}"
            if await claim_idempotency_key(conn, ctx, operation, key) is not None:
                found = await _find_relationship(conn, source_id, target_id, type)
                if found is None:
                    raise NotFound("relationship", f"{source_id} {type} {target_id}")
                return found
            old = await _find_relationship(conn, source_id, target_id, type, lock=True)
            if old is not None and old.weight == weight:
                return old
            row = await conn.fetchrow(
                "INSERT INTO agent_relationships (source_id, target_id, type, weight)"
                " VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (source_id, target_id, type) DO UPDATE SET weight = EXCLUDED.weight"
                f" RETURNING {_RELATIONSHIP_COLUMNS}",
                source_id,
                target_id,
                type,
                float(weight),
            )
            assert row is not None
            relationship = _relationship_from(row)
            await write_audit(
                conn,
                ctx,
                "relate",
                "agent_relationship",
                _key(key),
                old,
                relationship,
                outbox=("agent.related", {**key, "weight": relationship.weight}),
            )
        return relationship

    async def unrelate(
        self, ctx: WriteContext, source_id: UUID, target_id: UUID, type: str
    ) -> bool:
        """Remove the relationship; False when there was none."""
        key = {"source_id": str(source_id), "target_id": str(target_id), "type": type}
        async with write_transaction(self._store) as conn:
            operation = f"agent.unrelate {source_id} {type} {target_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"removed": False})
            if replay is not None:
                return bool(replay["removed"])
            row = await conn.fetchrow(
                "DELETE FROM agent_relationships"
                " WHERE source_id = $1 AND target_id = $2 AND type = $3"
                f" RETURNING {_RELATIONSHIP_COLUMNS}",
                source_id,
                target_id,
                type,
            )
            if row is None:
                return False
            old = _relationship_from(row)
            await write_audit(
                conn,
                ctx,
                "unrelate",
                "agent_relationship",
                _key(key),
                old,
                None,
                outbox=("agent.unrelated", key),
            )
            await settle_idempotency_key(conn, ctx, {"removed": True})
        return True

    async def relationships_of(
        self, agent_ids: Sequence[UUID]
    ) -> dict[UUID, list[AgentRelationship]]:
        """Each agent's relationships, either end, oldest first, in one query."""
        found: dict[UUID, list[AgentRelationship]] = {agent_id: [] for agent_id in agent_ids}
        if not found:
            return found
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_RELATIONSHIP_COLUMNS} FROM agent_relationships"
                " WHERE source_id = ANY($1::uuid[]) OR target_id = ANY($1::uuid[])"
                " ORDER BY created_at, source_id, target_id, type",
                list(found),
            )
        for row in rows:
            relationship = _relationship_from(row)
            for end in {relationship.source_id, relationship.target_id}:
                if end in found:
                    found[end].append(relationship)
        return found

    async def all_relationships(
        self, *, batch_size: int = 1000
    ) -> AsyncIterator[AgentRelationship]:
        """Every relationship, in key order, for rebuilding the graph; reads in batches
        so no connection is held while the caller works."""
        sql = (
            f"SELECT {_RELATIONSHIP_COLUMNS} FROM agent_relationships{{where}}"
            " ORDER BY source_id, target_id, type LIMIT $1"
        )
        after: tuple[UUID, UUID, str] | None = None
        while True:
            async with self._store.read_connection() as conn:
                if after is None:
                    rows = await conn.fetch(sql.format(where=""), batch_size)
                else:
                    rows = await conn.fetch(
                        sql.format(where=" WHERE (source_id, target_id, type) > ($2, $3, $4)"),
                        batch_size,
                        *after,
                    )
            for row in rows:
                yield _relationship_from(row)
            if len(rows) < batch_size:
                return
            last = rows[-1]
            after = (last["source_id"], last["target_id"], last["type"])

    async def list(
        self,
        filter: AgentFilter,
        order: AgentOrder,
        page: PageRequest,
        *,
        with_total: bool = False,
    ) -> Page[Agent]:
        return await self._page(_COLUMNS, _agent, filter, order, page, with_total)

    async def list_columns(
        self,
        filter: AgentFilter,
        order: AgentOrder,
        page: PageRequest,
        columns: Sequence[str],
        *,
        with_total: bool = False,
    ) -> Page[tuple[Any, ...]]:
        """`list` reading only `columns` (`id` first), each agent a tuple of them in that
        order: a page that shows a few columns pays for no whole record."""
        _check_columns(columns)
        return await self._page(", ".join(columns), tuple, filter, order, page, with_total)

    async def list_columns_with_tasks(
        self,
        filter: AgentFilter,
        order: AgentOrder,
        page: PageRequest,
        columns: Sequence[str],
        tasks: TasksOfEach,
        *,
        with_total: bool = False,
    ) -> tuple[Page[tuple[Any, ...]], Sequence[AssigneeTasks[tuple[Any, ...]]]]:
        """`list_columns`, and each agent's first tasks as `tasks` asks, in the same
        statement: a page of agents and their tasks in one round trip, where
        `TaskRepository.columns_for_assignees` after the page would take a second."""
        _check_columns(columns)
        width = len(columns)
        params = Params()
        select = f"{', '.join(columns)}, {tasks_of_each('agents.id', tasks, params)}"

        def split(row: Record) -> tuple[tuple[Any, ...], AssigneeTasks[tuple[Any, ...]]]:
            return row[:width], assignee_page(row[width], row[width + 1], tasks.first)

        found = await self._page(select, split, filter, order, page, with_total, params)
        return (
            dataclasses.replace(found, items=[agent for agent, _ in found.items]),
            [assignee_tasks for _, assignee_tasks in found.items],
        )

    async def _page(
        self,
        select: str,
        decode: Callable[[Record], T],
        filter: AgentFilter,
        order: AgentOrder,
        page: PageRequest,
        with_total: bool,
        params: Params | None = None,
    ) -> Page[T]:
        # `params` holds the values `select` already binds, if any.
        params = params if params is not None else Params()
        async with self._store.read_connection() as conn:
            return await fetch_page(
                conn,
                select=select,
                source="agents",
                where=_list_conditions(filter, params),
                params=params,
                order=_ORDERS[order],
                page=page,
                with_total=with_total,
                decode=decode,
            )


def _check_columns(columns: Sequence[str]) -> None:
    if not set(columns) <= _READABLE_COLUMNS or not columns or columns[0] != "id":
        raise ValueError(f"not agent columns: {columns!r}")


def _list_conditions(filter: AgentFilter, params: Params) -> list[str]:
    where: list[str] = []
    if filter.statuses is not None:
        where.append(params.any_of("status", filter.statuses, "text"))
    if filter.roles is not None:
        where.append(params.any_of("role", filter.roles, "text"))
    if filter.tags_any is not None:
        where.append(f"tags && {params(list(filter.tags_any))}::text[]")
    if filter.capabilities_all is not None:
        where.append(f"capabilities @> {params(list(filter.capabilities_all))}::text[]")
    if filter.name_contains is not None:
        where.append(f"name ILIKE {params(like_pattern(filter.name_contains))}")
    if filter.parent_id is None:
        where.append("parent_id IS NULL")
    elif filter.parent_id is not UNSET:
        where.append(f"parent_id = {params(filter.parent_id)}")
    if filter.metadata_contains is not None:
        where.append(f"metadata @> {params(filter.metadata_contains)}::jsonb")
    if filter.ids is not None:
        where.append(f"id = ANY({params(list(filter.ids))}::uuid[])")
    return where


# Columns a client writes, in INSERT order.
_WRITABLE = ("name", "role", "status", "capabilities", "tags", "notes", "metadata", "parent_id")


def _checked(values: dict[str, Any]) -> dict[str, Any]:
    """Validate the given writable columns; lists come back as lists, deduplicated."""
    checked = dict(values)
    if "name" in values:
        check_text("name", values["name"], 100)
    if "role" in values:
        check_text("role", values["role"], 50)
    if "status" in values and values["status"] not in AGENT_STATUSES:
        raise InvalidInput("status", f"must be one of {', '.join(AGENT_STATUSES)}")
    for column in ("capabilities", "tags"):
        if column in values:
            checked[column] = _labels(column, values[column])
    if "notes" in values and not isinstance(values["notes"], str):
        raise InvalidInput("notes", "must be text")
    if "metadata" in values:
        check_json_object("metadata", values["metadata"], MAX_METADATA_BYTES)
    return checked


def _labels(field: str, values: object) -> list[str]:
    if isinstance(values, str) or not isinstance(values, Sequence):
        raise InvalidInput(field, "must be a list of text")
    labels = list(dict.fromkeys(values))
    if len(labels) > MAX_LABELS:
        raise InvalidInput(field, f"has {len(labels)} entries; the limit is {MAX_LABELS}")
    for label in labels:
        if not isinstance(label, str) or not 1 <= len(label) <= 100:
            raise InvalidInput(field, "entries must be 1 to 100 characters")
    return labels


def _check_relationship(source_id: UUID, target_id: UUID, type: str) -> None:
    if type == "PARENT_OF":
        raise InvalidInput("type", "PARENT_OF comes from an agent's parentId; set that instead")
    if type not in RELATIONSHIP_TYPES:
        raise InvalidInput("type", f"must be one of {', '.join(RELATIONSHIP_TYPES)}")
    if source_id == target_id:
        raise InvalidInput("targetId", "an agent cannot be related to itself")


def _refusals(values: dict[str, Any]) -> Refusals:
    return {
        "agents_name_key": lambda: Conflict(
            f"an agent named {values.get('name')!r} already exists; choose another name",
            field="name",
        ),
        "agents_parent_id_fkey": lambda: NotFound(
            "agent", values.get("parent_id"), field="parentId"
        ),
    }


async def _get(conn: PgConnection, agent_id: UUID) -> Agent:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM agents WHERE id = $1", agent_id)
    if row is None:
        raise NotFound("agent", agent_id)
    return _agent(row)


async def _lock(
    conn: PgConnection, agent_id: UUID, expected_version: int | None, *, deleting: bool = False
) -> Agent:
    # NO KEY UPDATE unless deleting, so foreign-key checks on other rows that point
    # here (a child's parent, a task's assignee) need not wait for this transaction.
    strength = "UPDATE" if deleting else "NO KEY UPDATE"
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM agents WHERE id = $1 FOR {strength}", agent_id
    )
    if row is None:
        raise NotFound("agent", agent_id)
    agent = _agent(row)
    check_version("agent", agent_id, agent.version, expected_version)
    return agent


async def _refuse_parent_cycle(conn: PgConnection, agent: Agent, parent_id: UUID) -> None:
    """Refuse a parent that descends from `agent`, naming the loop it would close.
    The caller holds the parent lock."""
    # Walk up from the new parent; reaching `agent` means the parent is its descendant.
    rows = await conn.fetch(
        """
        WITH RECURSIVE chain (id, name, parent_id, depth) AS (
            SELECT id, name, parent_id, 0 FROM agents WHERE id = $1
          UNION ALL
            SELECT a.id, a.name, a.parent_id, c.depth + 1
            FROM chain AS c JOIN agents AS a ON a.id = c.parent_id
            WHERE c.id <> $2
        ) CYCLE id SET looped USING path
        SELECT id, name FROM chain WHERE NOT looped ORDER BY depth
        """,
        parent_id,
        agent.id,
    )
    if not rows:
        raise NotFound("agent", parent_id, field="parentId")
    if rows[-1]["id"] != agent.id:
        return
    names = [f"{agent.name} ({agent.id})"] + [f"{row['name']} ({row['id']})" for row in rows]
    raise Conflict(
        f"parentId would create a cycle: {' -> '.join(names)} (each the child of the next);"
        f" choose a parent that does not descend from {agent.name}",
        field="parentId",
    )


async def _find_relationship(
    conn: PgConnection, source_id: UUID, target_id: UUID, type: str, *, lock: bool = False
) -> AgentRelationship | None:
    row = await conn.fetchrow(
        f"SELECT {_RELATIONSHIP_COLUMNS} FROM agent_relationships"
        " WHERE source_id = $1 AND target_id = $2 AND type = $3" + (" FOR UPDATE" if lock else ""),
        source_id,
        target_id,
        type,
    )
    return None if row is None else _relationship_from(row)


def _key(key: dict[str, str]) -> str:
    return f"{key['source_id']} {key['type']} {key['target_id']}"


def _comparable(value: object) -> object:
    return tuple(value) if isinstance(value, list | tuple) else value


def _upserted(agent: Agent) -> JSON:
    return {
        "id": str(agent.id),
        "name": agent.name,
        "role": agent.role,
        "status": agent.status,
        "parent_id": None if agent.parent_id is None else str(agent.parent_id),
    }


def _agent(row: Record) -> Agent:
    return Agent(
        id=row["id"],
        name=row["name"],
        role=row["role"],
        status=row["status"],
        capabilities=tuple(row["capabilities"]),
        tags=tuple(row["tags"]),
        notes=row["notes"],
        metadata=row["metadata"],
        parent_id=row["parent_id"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )


def _agent_from_json(data: JSON) -> Agent:
    """An agent from its audit/idempotency snapshot (see `to_json`)."""
    return Agent(
        id=UUID(data["id"]),
        name=data["name"],
        role=data["role"],
        status=data["status"],
        capabilities=tuple(data["capabilities"]),
        tags=tuple(data["tags"]),
        notes=data["notes"],
        metadata=data["metadata"],
        parent_id=None if data["parent_id"] is None else UUID(data["parent_id"]),
        created_at=datetime.fromisoformat(data["created_at"]),
        updated_at=datetime.fromisoformat(data["updated_at"]),
        version=data["version"],
    )


def _relationship_from(row: Record) -> AgentRelationship:
    return AgentRelationship(
        source_id=row["source_id"],
        target_id=row["target_id"],
        type=row["type"],
        weight=row["weight"],
        created_at=row["created_at"],
    )
