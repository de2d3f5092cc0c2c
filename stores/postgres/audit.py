"""Reading the audit log; rows are written by each change's own transaction (see `writes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from asyncpg import Record

from stores.postgres.inputs import AuditFilter
from stores.postgres.pagination import Page, PageRequest, Params, fetch_page, ordering
from stores.postgres.records import AuditEntry, WriteContext
from stores.postgres.writes import write_audit

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

_COLUMNS = (
    "id, actor_id, action, resource_type, resource_id, old_value, new_value, request_id,"
    " host(client_address) AS client_address, created_at"
)
_NEWEST_FIRST = ordering(
    "audit.-created", ("created_at", "timestamp"), ("id", "int"), descending=True
)


class AuditRepository:
    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def record(
        self,
        ctx: WriteContext,
        action: str,
        resource_type: str,
        resource_id: object,
        new: object | None = None,
    ) -> None:
        """Audit a change made outside PostgreSQL (sessions live in Redis)."""
        async with self._store.connection() as conn:
            await write_audit(conn, ctx, action, resource_type, resource_id, None, new)

    async def list(
        self, filter: AuditFilter, page: PageRequest, *, with_total: bool = False
    ) -> Page[AuditEntry]:
        """Matching entries, newest first."""
        params = Params()
        where: list[str] = []
        for column in ("actor_id", "resource_type", "resource_id", "action"):
            value = getattr(filter, column)
            if value is not None:
                where.append(f"{column} = {params(value)}")
        if filter.since is not None:
            where.append(f"created_at >= {params(filter.since)}")
        if filter.until is not None:
            where.append(f"created_at < {params(filter.until)}")
        async with self._store.connection() as conn:
            return await fetch_page(
                conn,
                select=_COLUMNS,
                source="audit_log",
                where=where,
                params=params,
                order=_NEWEST_FIRST,
                page=page,
                with_total=with_total,
                decode=_entry,
            )


def _entry(row: Record) -> AuditEntry:
    return AuditEntry(
        id=row["id"],
        actor_id=row["actor_id"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        old_value=row["old_value"],
        new_value=row["new_value"],
        request_id=row["request_id"],
        client_address=row["client_address"],
        created_at=row["created_at"],
    )
