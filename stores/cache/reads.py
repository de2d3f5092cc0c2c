"""What an operation read, as the query-result cache needs to know it.

While an operation runs under `watching()`, the caches note the kinds they served
(`served`), and every round trip to a store made outside a cache's own load counts as
an uncached read: such a read (a list query, a grant check, the graph) has no change
notice to end a cached copy, so a result that made one is never cached.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from stores import roundtrips


@dataclass
class ReadLog:
    kinds: set[str] = field(default_factory=set)
    uncached: int = 0


_log: ContextVar[ReadLog | None] = ContextVar("polygraph_cache_reads", default=None)
_in_cache_load: ContextVar[bool] = ContextVar("polygraph_cache_load", default=False)


def served(kind: str) -> None:
    """A cache answered (or is loading) reads of `kind` for the current operation."""
    log = _log.get()
    if log is not None:
        log.kinds.add(kind)


def not_cacheable() -> None:
    """The current operation read something no change notice covers."""
    log = _log.get()
    if log is not None:
        log.uncached += 1


def cache_load() -> None:
    """Called at the start of a cache's own load, in a task of its own: its round trips
    are covered by the cache's invalidation."""
    _in_cache_load.set(True)


def _observe(store: str, count: int, seconds: float | None) -> None:
    if not count or _in_cache_load.get():
        return
    log = _log.get()
    if log is not None:
        log.uncached += count


roundtrips.add_observer(_observe)


@contextmanager
def watching() -> Iterator[ReadLog]:
    log = ReadLog()
    token = _log.set(log)
    try:
        yield log
    finally:
        _log.reset(token)
