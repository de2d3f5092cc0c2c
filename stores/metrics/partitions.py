"""Native path: range partitions of `metric_points`, made ahead and dropped when expired.

Partition bounds are multiples of the chunk interval from the bucket origin, so
every gateway computes the same names. Creation and dropping take an advisory
lock and run in their own short transaction, apart from any ingest.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from stores.metrics.buckets import align_down
from stores.metrics.sql import native
from stores.postgres.options import PgConnection

# Any constant works as long as nothing else in the database takes the same lock.
_PARTITION_LOCK = 0x706F6C79_70617274  # "polypart"


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    start: datetime
    end: datetime


def partition_of(moment: datetime, interval: timedelta) -> Partition:
    start = align_down(moment, interval)
    return Partition(f"metric_points_{start:%Y%m%d_%H%M}", start, start + interval)


def partitions_covering(start: datetime, end: datetime, interval: timedelta) -> list[Partition]:
    """Every partition that holds a moment of `[start, end]`."""
    first = partition_of(start, interval)
    count = (end - first.start) // interval + 1
    return [partition_of(first.start + index * interval, interval) for index in range(count)]


async def ensure(conn: PgConnection, wanted: Iterable[Partition]) -> list[str]:
    """Create the partitions that are missing; returns the names created."""
    created: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
        for partition in wanted:
            # A partition made under another chunk interval may cover part of the range:
            # its rows are routed there, and a new one would overlap it.
            if await conn.fetchval(native.OVERLAPPING_PARTITION, partition.start, partition.end):
                continue
            await conn.execute(
                native.CREATE_PARTITION.format(
                    name=partition.name,
                    start=partition.start.isoformat(),
                    end=partition.end.isoformat(),
                )
            )
            await conn.execute(
                native.REGISTER_PARTITION, partition.name, partition.start, partition.end
            )
            created.append(partition.name)
    return created


async def drop_expired(conn: PgConnection, horizon: datetime) -> list[str]:
    """Drop partitions wholly older than `horizon`: only rows older than it go."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _PARTITION_LOCK)
        names = [row["name"] for row in await conn.fetch(native.EXPIRED_PARTITIONS, horizon)]
        for name in names:
            await conn.execute(native.DROP_PARTITION.format(name=name))
            await conn.execute(native.FORGET_PARTITION, name)
    return names


async def known(conn: PgConnection) -> list[Partition]:
    rows = await conn.fetch(native.KNOWN_PARTITIONS)
    return [Partition(row["name"], row["range_start"], row["range_end"]) for row in rows]
