"""A bounded mapping that forgets the least recently used entry first: what the
gateway's in-process caches keep their entries in (plans, prepared operations,
persisted documents, remembered refusals, sessions, cached entities). Not the
sessions kept through a Redis outage (`stores.redis.sessions`), whose eviction passes
over the ones Redis has not seen. And `RememberedForShortTexts`, for a function of a
text a client sends."""

from __future__ import annotations

import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")
D = TypeVar("D")


class Lru(Generic[K, V]):
    """At most `capacity` entries and, with `max_weight`, entries whose weights (given
    to `put`) add up to at most that; reading or writing one makes it the most
    recently used. Not thread-safe: each belongs to one event loop."""

    __slots__ = ("_entries", "_weights", "capacity", "max_weight", "weight")

    def __init__(self, capacity: int, max_weight: int | None = None) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.max_weight = max_weight
        self.weight = 0
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._weights: dict[K, int] = {}

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

    def put(self, key: K, value: V, weight: int = 1) -> None:
        """Keeps `value`, unless its weight alone is more than `max_weight`."""
        entries = self._entries
        if self.max_weight is not None:
            if weight > self.max_weight:
                self.pop(key)
                return
            self.weight += weight - self._weights.get(key, 0)
            self._weights[key] = weight
        entries[key] = value
        entries.move_to_end(key)
        while len(entries) > self.capacity or (
            self.max_weight is not None and self.weight > self.max_weight
        ):
            dropped, _ = entries.popitem(last=False)
            self.weight -= self._weights.pop(dropped, 0)

    def pop(self, key: K) -> V | None:
        self.weight -= self._weights.pop(key, 0)
        return self._entries.pop(key, None)

    def items(self) -> Iterator[tuple[K, V]]:
        return iter(self._entries.items())

    def clear(self) -> None:
        self._entries.clear()
        self._weights.clear()
        self.weight = 0


class RememberedForShortTexts(Generic[V]):
    """`function` of a text, its results remembered (`functools.lru_cache`, `maxsize`
    of them) for texts of at most `max_chars` and worked out anew for longer ones: the
    texts are what clients send (ids, header values), which repeat, and a cache keyed
    by them would otherwise keep whatever length a client chose, a megabyte each."""

    __slots__ = ("_function", "_max_chars", "_remembered")

    def __init__(self, function: Callable[[str], V], *, maxsize: int, max_chars: int) -> None:
        self._function = function
        self._max_chars = max_chars
        self._remembered = functools.lru_cache(maxsize=maxsize)(function)

    def __call__(self, text: str) -> V:
        if len(text) > self._max_chars:
            return self._function(text)
        return self._remembered(text)

    def cache_info(self) -> functools._CacheInfo:
        return self._remembered.cache_info()
