"""A bounded mapping that forgets the least recently used entry first: what the
gateway's in-process caches keep their entries in (plans, prepared operations,
persisted documents, remembered refusals, sessions, cached entities). Not the
sessions kept through a Redis outage (`stores.redis.sessions`), whose eviction passes
over the ones Redis has not seen."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class Lru(Generic[K, V]):
    """At most `capacity` entries; reading or writing one makes it the most recently
    used. Not thread-safe: each belongs to one event loop."""

    __slots__ = ("_entries", "capacity")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[K, V] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: K) -> bool:
        # A look, not a use: the entry's place is left as it is.
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(self._entries)

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: D) -> V | D: ...

    def get(self, key: K, default: object = None) -> object:
        entries = self._entries
        value = entries.get(key, default)
        if value is not default:
            entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        entries = self._entries
        entries[key] = value
        entries.move_to_end(key)
        if len(entries) > self.capacity:
            entries.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._entries.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._entries.items())

    def clear(self) -> None:
        self._entries.clear()
