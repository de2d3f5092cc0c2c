"""The in-process level of the entity cache."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Final
from uuid import UUID

from stores.cache.lru import Lru

Key = tuple[str, UUID]


class _Missing:
    __slots__ = ()


MISSING: Final = _Missing()
_ALL: Final = "*"


class LocalCache:
    """Records by (kind, id) until their expiry; the least recently used go first
    beyond `capacity`.

    A read that began before an invalidation must not store what it read: loads take
    a ticket (`begin_load`) and `fill` refuses an entry invalidated since that ticket.
    """

    __slots__ = ("_entries", "_kind_marks", "_loads", "_marks", "_sequence")

    def __init__(self, capacity: int) -> None:
        self._entries: Lru[Key, tuple[object, float]] = Lru(capacity)
        self._sequence = 0
        # Invalidations seen while loads run, by key and by kind: their sequence number.
        self._marks: dict[Key, int] = {}
        self._kind_marks: dict[str, int] = {}
        self._loads = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> object:
        entry = self._entries.get(key)
        if entry is None:
            return MISSING
        if entry[1] <= time.monotonic():
            self._entries.pop(key)
            return MISSING
        return entry[0]

    def begin_load(self) -> int:
        self._loads += 1
        return self._sequence

    def end_load(self) -> None:
        self._loads -= 1
        if self._loads == 0:
            self._marks.clear()
            self._kind_marks.clear()

    def fill(self, key: Key, value: object, ttl_s: float, ticket: int) -> bool:
        marks = self._kind_marks
        if (
            self._marks.get(key, -1) >= ticket
            or marks.get(key[0], -1) >= ticket
            or marks.get(_ALL, -1) >= ticket
        ):
            return False
        self._entries.put(key, (value, time.monotonic() + ttl_s))
        return True

    def invalidate(self, kind: str, ids: Iterable[UUID]) -> None:
        sequence = self._bump()
        for entity_id in ids:
            key = (kind, entity_id)
            self._entries.pop(key)
            if self._loads:
                self._marks[key] = sequence

    def invalidate_kind(self, kind: str) -> None:
        sequence = self._bump()
        for key in [key for key in self._entries if key[0] == kind]:
            self._entries.pop(key)
        if self._loads:
            self._kind_marks[kind] = sequence

    def clear(self) -> None:
        self._kind_marks[_ALL] = self._bump()
        self._entries.clear()

    def _bump(self) -> int:
        # A ticket taken before this call holds a smaller number: `fill` compares >=.
        self._sequence += 1
        return self._sequence - 1
