"""One execution per subscription event for every subscriber who would get the same answer.

graphql-core executes a subscription's selection once per event per subscriber: a
hundred subscribers of one event run it a hundred times. When the subscriptions hand
out the same payload object for an event (e.g. `Event.memo`), subscribers whose
operation, variables and permission scope are equal get the same result: the first
executes it, the others take its result (or wait for it). The scope says whose
permission checks would decide alike (the principal, say); without one, nothing is
shared. Results live as long as the payload does.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable, Hashable
from typing import Any

from graphql.execution.types import ExecutionResult

Scope = Callable[[Any], Hashable | None]


class SharedEvents:
    """Results of event executions, per payload, by (operation, variables, scope).

    Keyed by the payload's identity (payloads need not be hashable: Strawberry types
    are not); an entry goes when its payload is collected."""

    def __init__(self) -> None:
        self._results: dict[int, tuple[weakref.ref[Any], dict[Hashable, Any]]] = {}

    def __len__(self) -> int:
        return len(self._results)

    def results_of(self, payload: Any) -> dict[Hashable, Any] | None:
        entry = self._results.get(id(payload))
        if entry is not None and entry[0]() is payload:
            return entry[1]
        try:
            reference = weakref.ref(payload)
        except TypeError:
            return None  # not weakly referenceable: not shared
        shared: dict[Hashable, Any] = {}
        self._results[id(payload)] = (reference, shared)
        weakref.finalize(payload, self._results.pop, id(payload), None)
        return shared


class SharedResult:
    """Stands in for a per-event executor whose result another subscriber produced."""

    __slots__ = ("_entry",)

    def __init__(self, entry: ExecutionResult | asyncio.Future[ExecutionResult]) -> None:
        self._entry = entry

    def execute_operation(self, serially: bool | None = None) -> Any:
        entry = self._entry
        if isinstance(entry, asyncio.Future):
            return _shielded(entry)
        return entry


async def _shielded(future: asyncio.Future[ExecutionResult]) -> ExecutionResult:
    # A subscriber that leaves does not cancel the execution the others wait for.
    return await asyncio.shield(future)


def freeze(value: Any) -> Hashable:
    """Variable values as a hashable key (TypeError when a value cannot be one)."""
    if isinstance(value, dict):
        return tuple(sorted((key, freeze(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    hash(value)
    hashable: Hashable = value
    return hashable
