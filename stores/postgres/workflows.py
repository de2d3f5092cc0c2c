"""Workflows: named DAGs of steps, checked before they are stored.

A definition is `{"steps": [{"id", "name", "estimate"}], "edges": [{"from", "to"}]}`;
it is stored normalised (every step has its estimate) so readers need no defaults.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID, uuid4

from asyncpg import Record

from stores.errors import InvalidInput, NotFound
from stores.postgres.inputs import (
    WorkflowFilter,
    WorkflowOrder,
    check_text,
    json_size,
    like_pattern,
)
from stores.postgres.options import PgConnection
from stores.postgres.pagination import Page, PageRequest, Params, fetch_page, ordering
from stores.postgres.records import JSON, Workflow, WriteContext
from stores.postgres.writes import (
    check_version,
    claim_idempotency_key,
    write_audit,
    write_transaction,
)

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

WORKFLOW_STATUSES = ("draft", "active", "paused", "completed", "archived")
MAX_STEPS = 1000
MAX_DEFINITION_BYTES = 256 * 1024
DEFAULT_ESTIMATE = 1

_COLUMNS = "id, name, definition, status, created_at, updated_at, version"
_ORDERS = {
    WorkflowOrder.CREATED_AT_ASC: ordering(
        "workflows.created", ("created_at", "timestamp"), ("id", "uuid")
    ),
    WorkflowOrder.CREATED_AT_DESC: ordering(
        "workflows.-created", ("created_at", "timestamp"), ("id", "uuid"), descending=True
    ),
    WorkflowOrder.NAME_ASC: ordering("workflows.name", ("name", "text"), ("id", "uuid")),
    WorkflowOrder.NAME_DESC: ordering(
        "workflows.-name", ("name", "text"), ("id", "uuid"), descending=True
    ),
}


class WorkflowRepository:
    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, Workflow]:
        if not ids:
            return {}
        async with self._store.read_connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM workflows WHERE id = ANY($1::uuid[])", list(ids)
            )
        return {row["id"]: _workflow(row) for row in rows}

    async def create(self, ctx: WriteContext, name: str, definition: JSON) -> Workflow:
        check_text("name", name, 200)
        normalised = normalise_definition(definition)
        workflow_id = uuid4()
        async with write_transaction(self._store) as conn:
            replay = await claim_idempotency_key(
                conn, ctx, "workflow.create", {"id": str(workflow_id)}
            )
            if replay is not None:
                return await _get(conn, UUID(replay["id"]))
            row = await conn.fetchrow(
                "INSERT INTO workflows (id, name, definition) VALUES ($1, $2, $3)"
                f" RETURNING {_COLUMNS}",
                workflow_id,
                name,
                normalised,
            )
            assert row is not None
            workflow = _workflow(row)
            await write_audit(
                conn,
                ctx,
                "create",
                "workflow",
                workflow.id,
                None,
                workflow,
                outbox=("workflow.upserted", _upserted(workflow)),
            )
        return workflow

    async def update(
        self,
        ctx: WriteContext,
        workflow_id: UUID,
        *,
        expected_version: int | None,
        name: str | None = None,
        definition: JSON | None = None,
        status: str | None = None,
    ) -> Workflow:
        """Change the given fields (None leaves a field as it is)."""
        values: dict[str, Any] = {}
        if name is not None:
            check_text("name", name, 200)
            values["name"] = name
        if definition is not None:
            values["definition"] = normalise_definition(definition)
        if status is not None:
            if status not in WORKFLOW_STATUSES:
                raise InvalidInput("status", f"must be one of {', '.join(WORKFLOW_STATUSES)}")
            values["status"] = status
        async with write_transaction(self._store) as conn:
            operation = f"workflow.update {workflow_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"id": str(workflow_id)})
            if replay is not None:
                return await _get(conn, workflow_id)
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM workflows WHERE id = $1 FOR NO KEY UPDATE", workflow_id
            )
            if row is None:
                raise NotFound("workflow", workflow_id)
            current = _workflow(row)
            check_version("workflow", workflow_id, current.version, expected_version)
            changes = {k: v for k, v in values.items() if getattr(current, k) != v}
            if not changes:
                return current
            params = Params([workflow_id, current.version])
            assignments = ", ".join(
                f"{column} = {params(value)}" for column, value in changes.items()
            )
            row = await conn.fetchrow(
                f"UPDATE workflows SET {assignments}, version = version + 1, updated_at = now()"
                f" WHERE id = $1 AND version = $2 RETURNING {_COLUMNS}",
                *params.values,
            )
            assert row is not None, "the row is locked, so its version cannot have moved"
            workflow = _workflow(row)
            await write_audit(
                conn,
                ctx,
                "update",
                "workflow",
                workflow_id,
                current,
                workflow,
                outbox=("workflow.upserted", _upserted(workflow)),
            )
        return workflow

    async def list(
        self,
        filter: WorkflowFilter,
        order: WorkflowOrder,
        page: PageRequest,
        *,
        with_total: bool = False,
    ) -> Page[Workflow]:
        params = Params()
        where: list[str] = []
        if filter.statuses is not None:
            where.append(params.any_of("status", filter.statuses, "text"))
        if filter.name_contains is not None:
            where.append(f"name ILIKE {params(like_pattern(filter.name_contains))}")
        async with self._store.read_connection() as conn:
            return await fetch_page(
                conn,
                select=_COLUMNS,
                source="workflows",
                where=where,
                params=params,
                order=_ORDERS[order],
                page=page,
                with_total=with_total,
                decode=_workflow,
            )


def normalise_definition(definition: object) -> JSON:
    """Check a definition's shape and that it is a DAG; returns it with defaults filled in."""
    if not isinstance(definition, dict):
        raise InvalidInput("definition", "must be a JSON object with `steps` and `edges`")
    _only_keys("definition", definition, {"steps", "edges"})
    raw_steps = definition.get("steps")
    raw_edges = definition.get("edges", [])
    if not isinstance(raw_steps, list) or not isinstance(raw_edges, list):
        raise InvalidInput("definition", "`steps` and `edges` must be lists")
    if len(raw_steps) > MAX_STEPS:
        raise InvalidInput("definition", f"has {len(raw_steps)} steps; the limit is {MAX_STEPS}")

    steps = [_step(index, raw) for index, raw in enumerate(raw_steps)]
    following: dict[str, list[str]] = {}
    for step in steps:
        if step["id"] in following:
            raise InvalidInput(
                "definition", f"step id {step['id']!r} appears twice; step ids must be unique"
            )
        following[step["id"]] = []

    edges: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for index, raw in enumerate(raw_edges):
        if not isinstance(raw, dict):
            raise InvalidInput("definition", f"edge {index} must be an object with from and to")
        _only_keys(f"edge {index}", raw, {"from", "to"})
        source, target = raw.get("from"), raw.get("to")
        for end in (source, target):
            if not isinstance(end, str) or end not in following:
                raise InvalidInput(
                    "definition", f"edge {index} refers to unknown step {end!r}; add the step"
                )
        assert isinstance(source, str) and isinstance(target, str)
        if (source, target) in seen:
            raise InvalidInput("definition", f"edge {source} -> {target} appears twice")
        seen.add((source, target))
        following[source].append(target)
        edges.append({"from": source, "to": target})

    cycle = _find_cycle(following)
    if cycle is not None:
        raise InvalidInput(
            "definition", f"steps {' -> '.join(cycle)} form a cycle; remove one of those edges"
        )
    normalised: JSON = {"steps": steps, "edges": edges}
    size = json_size(normalised)
    if size > MAX_DEFINITION_BYTES:
        raise InvalidInput("definition", f"is {size} bytes; the limit is 256 KiB")
    return normalised


def _step(index: int, raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise InvalidInput("definition", f"step {index} must be an object with id and name")
    _only_keys(f"step {index}", raw, {"id", "name", "estimate"})
    step_id, name = raw.get("id"), raw.get("name")
    estimate = raw.get("estimate", DEFAULT_ESTIMATE)
    if not isinstance(step_id, str) or not 1 <= len(step_id) <= 100:
        raise InvalidInput("definition", f"step {index} needs an id of 1 to 100 characters")
    if not isinstance(name, str) or not 1 <= len(name) <= 200:
        raise InvalidInput("definition", f"step {step_id!r} needs a name of 1 to 200 characters")
    if (
        isinstance(estimate, bool)
        or not isinstance(estimate, int | float)
        or not math.isfinite(estimate)
        or estimate < 0
    ):
        raise InvalidInput("definition", f"step {step_id!r} needs an estimate of 0 or more")
    return {"id": step_id, "name": name, "estimate": estimate}


def _only_keys(where: str, value: dict[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise InvalidInput(
            "definition",
            f"{where} has unknown keys {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}",
        )


def _find_cycle(following: dict[str, list[str]]) -> list[str] | None:
    """One cycle as `[a, b, ..., a]`, or None for a DAG (iterative DFS, no recursion limit)."""
    state = dict.fromkeys(following, 0)  # 0 unseen, 1 on the current path, 2 done
    for root in following:
        if state[root]:
            continue
        path = [root]
        state[root] = 1
        stack = [iter(following[root])]
        while stack:
            for child in stack[-1]:
                if state[child] == 1:
                    return [*path[path.index(child) :], child]
                if state[child] == 0:
                    state[child] = 1
                    path.append(child)
                    stack.append(iter(following[child]))
                    break
            else:
                state[path.pop()] = 2
                stack.pop()
    return None


async def _get(conn: PgConnection, workflow_id: UUID) -> Workflow:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM workflows WHERE id = $1", workflow_id)
    if row is None:
        raise NotFound("workflow", workflow_id)
    return _workflow(row)


def _upserted(workflow: Workflow) -> JSON:
    return {
        "id": str(workflow.id),
        "name": workflow.name,
        "status": workflow.status,
        "steps": workflow.definition["steps"],
        "edges": workflow.definition["edges"],
    }


def _workflow(row: Record) -> Workflow:
    return Workflow(
        id=row["id"],
        name=row["name"],
        definition=row["definition"],
        status=row["status"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        version=row["version"],
    )
