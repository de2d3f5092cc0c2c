"""Trusted documents: registered operations, looked up by id or by SHA-256."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from stores.errors import Conflict
from stores.postgres.records import TrustedDocument

if TYPE_CHECKING:
    from asyncpg import Record

    from stores.postgres.store import PostgresStore

_COLUMNS = "id, sha256, body, client_name, created_at"


class TrustedDocumentRepository:
    """Reached as `PostgresStore.documents`. Documents are immutable once registered."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def by_id(self, document_id: str) -> TrustedDocument | None:
        async with self._store.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM trusted_documents WHERE id = $1", document_id
            )
        return _document(row) if row is not None else None

    async def by_sha256(self, sha256: str) -> TrustedDocument | None:
        async with self._store.connection() as conn:
            row = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM trusted_documents WHERE sha256 = $1"
                " ORDER BY created_at LIMIT 1",
                sha256,
            )
        return _document(row) if row is not None else None

    async def register(
        self, documents: Sequence[tuple[str, str, str]], *, client_name: str = ""
    ) -> int:
        """Register `(id, sha256, body)` triples, all or none; returns how many were new.

        An id registered before with the same body is left as it is; with another
        body it is a `Conflict` (an id names one document for good: clients cache by it).
        """
        async with self._store.connection() as conn, conn.transaction():
            inserted = await conn.fetch(
                "INSERT INTO trusted_documents (id, sha256, body, client_name)"
                " SELECT id, sha256, body, $4"
                " FROM unnest($1::text[], $2::text[], $3::text[]) AS d(id, sha256, body)"
                " ON CONFLICT (id) DO NOTHING RETURNING id",
                [d[0] for d in documents],
                [d[1] for d in documents],
                [d[2] for d in documents],
                client_name,
            )
            new = {row["id"] for row in inserted}
            others = {i: body for i, _, body in documents if i not in new}
            if others:
                # Rolled back with the inserts if any of them differs.
                rows = await conn.fetch(
                    "SELECT id, body FROM trusted_documents WHERE id = ANY($1::text[])",
                    list(others),
                )
                changed = sorted(row["id"] for row in rows if row["body"] != others[row["id"]])
                if changed:
                    listed = ", ".join(changed[:5]) + (" ..." if len(changed) > 5 else "")
                    raise Conflict(
                        f"{len(changed)} document id(s) are registered with another body:"
                        f" {listed}; register a changed operation under a new id",
                        field="id",
                    )
        return len(new)

    async def recent(self, *, limit: int = 1000) -> list[TrustedDocument]:
        """The most recently registered first."""
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM trusted_documents ORDER BY created_at DESC, id LIMIT $1",
                limit,
            )
        return [_document(row) for row in rows]


def _document(row: Record) -> TrustedDocument:
    return TrustedDocument(
        id=row["id"],
        sha256=row["sha256"],
        body=row["body"],
        client_name=row["client_name"],
        created_at=row["created_at"],
    )
