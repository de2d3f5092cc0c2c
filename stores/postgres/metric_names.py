"""The registry of metric names, with unit and description.

Points are only accepted for registered names: a typo in a collector then shows
up as a rejected point instead of a new series nobody reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from stores.errors import InvalidInput
from stores.metrics.validation import PointRejected, check_name
from stores.postgres.records import WriteContext
from stores.postgres.store import PostgresStore
from stores.postgres.writes import claim_idempotency_key


@dataclass(frozen=True, slots=True)
class MetricName:
    name: str
    unit: str
    description: str
    created_at: datetime
    updated_at: datetime


_COLUMNS = "name, unit, description, created_at, updated_at"


async def register(
    store: PostgresStore,
    name: str,
    *,
    unit: str = "",
    description: str = "",
    ctx: WriteContext | None = None,
) -> MetricName:
    """Create the name, or update its unit and description (idempotent). A retry under
    the same `ctx.idempotency_key` changes nothing and gets the name as it is."""
    try:
        check_name(name)
    except PointRejected as exc:
        raise InvalidInput("name", exc.message) from None
    if len(unit) > 32:
        raise InvalidInput("unit", "a unit is at most 32 characters")
    if len(description) > 1000:
        raise InvalidInput("description", "a description is at most 1000 characters")
    async with store.connection() as conn, conn.transaction():
        replay = None
        if ctx is not None:
            replay = await claim_idempotency_key(conn, ctx, f"metric.register {name}", {})
        if replay is None:
            row = await conn.fetchrow(
                "INSERT INTO metric_names (name, unit, description) VALUES ($1, $2, $3)"
                " ON CONFLICT (name) DO UPDATE SET unit = EXCLUDED.unit,"
                " description = EXCLUDED.description, updated_at = now()"
                f" RETURNING {_COLUMNS}",
                name,
                unit,
                description,
            )
        else:
            row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM metric_names WHERE name = $1", name)
    assert row is not None, "metric names are never deleted"
    return MetricName(**dict(row))


async def by_names(store: PostgresStore, names: Sequence[str]) -> Mapping[str, MetricName]:
    async with store.connection() as conn:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM metric_names WHERE name = ANY($1::text[])", list(set(names))
        )
    return {row["name"]: MetricName(**dict(row)) for row in rows}


async def all_names(store: PostgresStore) -> list[MetricName]:
    async with store.connection() as conn:
        rows = await conn.fetch(f"SELECT {_COLUMNS} FROM metric_names ORDER BY name")
    return [MetricName(**dict(row)) for row in rows]
