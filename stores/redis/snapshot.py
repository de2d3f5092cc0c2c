"""A snapshot of Redis's keys taken through the client, for `polygraph backup`.

An RDB file lives on the server's disk, out of a client's reach, and can only be
loaded by restarting the server; DUMP and RESTORE move the same serialised values
over an ordinary connection instead (TLS, Sentinel and Cluster included). Each key
keeps its absolute expiry, so a key that has expired by the time of the restore
stays gone. RESTORE needs a server of the same or a newer version.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from stores.redis.store import RedisStore

_BATCH = 500


@dataclass(frozen=True, slots=True)
class KeySnapshot:
    key: bytes
    # Epoch milliseconds; None for a key without an expiry.
    expires_at_ms: int | None
    value: bytes


async def export_keys(redis: RedisStore) -> AsyncIterator[list[KeySnapshot]]:
    """Every key of the database (every shard under a cluster), in batches. Keys that
    expire or go while the scan runs are skipped."""
    keys: list[bytes] = []
    async for key in redis.client.scan_iter(count=_BATCH):
        keys.append(key)
        if len(keys) == _BATCH:
            yield await _dump(redis, keys)
            keys = []
    if keys:
        yield await _dump(redis, keys)


async def _dump(redis: RedisStore, keys: list[bytes]) -> list[KeySnapshot]:
    pipe = redis.client.pipeline(transaction=False)
    for key in keys:
        pipe.dump(key)
        pipe.pttl(key)
    replies = await pipe.execute()
    now_ms = int(time.time() * 1000)
    batch = []
    for key, value, ttl in zip(keys, replies[::2], replies[1::2], strict=True):
        # PTTL: -1 no expiry, -2 gone since the scan saw it.
        if value is None or ttl == -2:
            continue
        batch.append(KeySnapshot(key, None if ttl == -1 else now_ms + ttl, value))
    return batch


async def import_keys(redis: RedisStore, batch: Iterable[KeySnapshot]) -> int:
    """RESTORE each key, replacing one of the same name; returns how many were
    restored (those that have expired since are not)."""
    now_ms = int(time.time() * 1000)
    pipe = redis.client.pipeline(transaction=False)
    restored = 0
    for entry in batch:
        if entry.expires_at_ms is not None and entry.expires_at_ms <= now_ms:
            continue
        ttl = 0 if entry.expires_at_ms is None else entry.expires_at_ms
        pipe.restore(
            entry.key, ttl, entry.value, replace=True, absttl=entry.expires_at_ms is not None
        )
        restored += 1
    if restored:
        await pipe.execute()
    return restored
