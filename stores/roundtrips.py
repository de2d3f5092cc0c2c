"""Counts round trips to each store for the current request.

The gateway opens a `counting()` scope per request; every store call records
one round trip. DataLoader batches run in tasks that inherit the context, so
their queries land in the same counter. Outside a scope, recording is a no-op.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

_current: ContextVar[Counter[str] | None] = ContextVar("polygraph_round_trips", default=None)

# Process-wide listeners to every round trip, in a request or not (the gateway's
# Prometheus counters): `(store, count, seconds or None where not measured)`.
Observer = Callable[[str, int, "float | None"], None]
_observers: list[Observer] = []


def record(
    store: str, count: int = 1, *, seconds: float | None = None, observed: bool = True
) -> None:
    """`observed=False`: a round trip this request waited on but shared with others
    (one call for several requests' rate-limit charges), which the call itself
    records once for the observers."""
    counter = _current.get()
    if counter is not None:
        counter[store] += count
    if observed:
        for observer in _observers:
            observer(store, count, seconds)


def timed(store: str, seconds: float) -> None:
    """The latency of a call counted where it was made (Redis commands are counted by
    the code that sends them and timed by the client underneath)."""
    for observer in _observers:
        observer(store, 0, seconds)


def add_observer(observer: Observer) -> None:
    _observers.append(observer)


def remove_observer(observer: Observer) -> None:
    if observer in _observers:
        _observers.remove(observer)


def counting() -> _Counting:
    """A scope whose round trips are counted: `with counting() as counter: ...`."""
    return _Counting()


class _Counting:
    # A class rather than a generator-based context manager: entered on every request.
    __slots__ = ("_token",)

    def __enter__(self) -> Counter[str]:
        counter: Counter[str] = Counter()
        self._token = _current.set(counter)
        return counter

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)


@contextmanager
def paused() -> Iterator[None]:
    """Round trips inside are not counted (work that only checks other work, such as the
    tests' second run of each operation on graphql-core's executor)."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)
