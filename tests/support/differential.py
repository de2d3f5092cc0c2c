"""Every operation twice: on the planned executor, then on graphql-core's own.

`DifferentialExecutionContext` answers with the planned executor and then runs the
same operation, on the same executor inputs (document, variables, context, so the
same principal and loaders), through graphql-core's stock executor, and records any
difference in `data` or in the errors (message, path, locations, extensions, and the
exception behind each). The test client of the default test run uses it, so every
document the test suite sends is compared; `take_mismatches()` empties the record.

Root fields are resolved once: the stock run replays the planned run's root resolver
results (after checking it would pass the same arguments), so a mutation writes once
and a clock or a probe read at the root cannot differ. Everything below the root is
resolved again by the stock run, with loaders of its own. Its store round trips are
not counted, so X-Round-Trips reports the planned run alone. A run in which a store
failed (a statement timeout on a loaded machine, a server gone) proves nothing about
the executors; such an operation is not compared.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import asyncpg
import neo4j.exceptions
import redis.exceptions
from graphql import GraphQLError, GraphQLResolveInfo, print_ast
from graphql.execution import MiddlewareManager
from graphql.execution.types import ExecutionResult
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.app import permission_scope
from gateway.engine import PlannedExecutionContext, planned_execution_context
from gateway.engine.plan import FieldPlan
from resolvers.context import RequestContext
from resolvers.loaders import build_loaders
from stores import StoreUnavailable, roundtrips

# Failures of a store rather than of a request: they may hit one run and not the other.
STORE_FAILURES = (
    StoreUnavailable,
    asyncpg.QueryCanceledError,
    asyncpg.InterfaceError,
    neo4j.exceptions.ServiceUnavailable,
    neo4j.exceptions.SessionExpired,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

_lock = threading.Lock()
_mismatches: list[str] = []


def take_mismatches() -> list[str]:
    """The differences recorded since the last call (the app may run in another thread)."""
    with _lock:
        found = list(_mismatches)
        _mismatches.clear()
    return found


def _record(message: str) -> None:
    with _lock:
        _mismatches.append(message)


class DifferentialExecutionContext(planned_execution_context(share_events_by=permission_scope)):  # type: ignore[misc]
    """The planned executor, checked against the stock one on every operation."""

    # Root field -> (arguments, value, exception, whether the resolver returned an awaitable).
    _root_results: dict[str | int, tuple[dict[str, Any], Any, Exception | None, bool]]

    def execute_operation(self, serially: bool | None = None) -> Any:
        self._root_results = {}
        planned = super().execute_operation(serially)
        if self.is_awaitable(planned):
            return self._then_compare(cast(Awaitable[ExecutionResult], planned), serially)
        self._compare(cast(ExecutionResult, planned), serially)
        return planned

    def build_per_event_executor(self, payload: Any) -> PlannedExecutionContext:
        executor = cast(PlannedExecutionContext, super().build_per_event_executor(payload))
        if isinstance(executor, DifferentialExecutionContext):
            executor._root_results = {}
        # else another subscriber's execution of this event (gateway/engine/events.py),
        # compared when it ran.
        return executor

    async def _then_compare(
        self, planned: Awaitable[ExecutionResult], serially: bool | None
    ) -> ExecutionResult:
        result = await planned
        with roundtrips.paused(), self._own_loaders():
            stock: Any = self._stock().execute_operation(serially)
            if self.is_awaitable(stock):
                stock = await stock
        self._check(result, stock)
        return result

    def _compare(self, planned: ExecutionResult, serially: bool | None) -> None:
        with roundtrips.paused(), self._own_loaders():
            stock = self._stock().execute_operation(serially)
        if self.is_awaitable(stock):  # pragma: no cover - a sync plan answer means sync resolvers
            _record(f"{self._describe()}: the planned run was synchronous, the stock one not")
            cast(Any, stock).close()
            return
        self._check(planned, cast(ExecutionResult, stock))

    @contextmanager
    def _own_loaders(self) -> Iterator[None]:
        """Fresh loaders for the stock run: the planned run may have cancelled some of
        its loads (a failing non-null sibling cancels the others), and a cancelled
        future stays cached in its loader."""
        context = self.context_value
        if not isinstance(context, RequestContext):
            yield
            return
        planned = context.loaders
        context.loaders = build_loaders(context.stores)
        try:
            yield
        finally:
            context.loaders = planned

    def _resolve(
        self, field: FieldPlan, source: Any, info: GraphQLResolveInfo[Any], args: dict[str, Any]
    ) -> Any:
        if info.path.prev is not None:
            return super()._resolve(field, source, info, args)
        key = info.path.key
        try:
            result = super()._resolve(field, source, info, args)
        except Exception as error:
            self._root_results[key] = (args, None, error, False)
            raise
        if not self.is_awaitable(result):
            self._root_results[key] = (args, result, None, False)
            return result
        return self._record_awaited(key, args, result)

    async def _record_awaited(self, key: str | int, args: dict[str, Any], result: Any) -> Any:
        try:
            value = await result
        except Exception as error:
            self._root_results[key] = (args, None, error, True)
            raise
        self._root_results[key] = (args, value, None, True)
        return value

    def _stock(self) -> StrawberryGraphQLCoreExecutionContext:
        recorded = self._root_results
        describe = self._describe

        def replay_root(next_: Any, root: Any, info: GraphQLResolveInfo[Any], **args: Any) -> Any:
            if info.path.prev is not None or info.field_name == "__typename":
                return next_(root, info, **args)
            entry = recorded.get(info.path.key)
            if entry is None:
                # Cancelled in the planned run (a sibling nulled the whole data).
                return next_(root, info, **args)
            planned_args, value, error, awaited = entry
            if planned_args != args:
                _record(
                    f"{describe()}: {info.path.key} got arguments {planned_args!r} from the"
                    f" planned executor, {args!r} from graphql-core"
                )
            if error is not None and not awaited:
                raise error
            if awaited:
                return _later(value, error)
            return value

        return StrawberryGraphQLCoreExecutionContext(
            self.schema,
            self.fragment_definitions,
            self.fragments,
            self.root_value,
            self.context_value,
            self.operation,
            self.variable_values,
            self.field_resolver,
            self.type_resolver,
            self.subscribe_field_resolver,
            self.enable_early_execution,
            MiddlewareManager(replay_root),
            self.is_awaitable,
            self.is_async_iterable,
            hide_suggestions=self.hide_suggestions,
            abort_signal=None,
            hooks=None,
            operation_extensions=self.operation_extensions,
        )

    def _describe(self) -> str:
        variables = self.variable_values.coerced
        return f"{print_ast(self.operation)!r} with {variables!r}"

    def _check(self, planned: ExecutionResult, stock: ExecutionResult) -> None:
        if _store_failed(planned) or _store_failed(stock):
            return
        if planned.data != stock.data:
            _record(
                f"{self._describe()}: data differs\n  planned: {planned.data!r}\n"
                f"  stock:   {stock.data!r}"
            )
        mine, theirs = _errors(planned), _errors(stock)
        if mine != theirs:
            _record(
                f"{self._describe()}: errors differ\n  planned: {mine!r}\n  stock:   {theirs!r}"
            )


async def _later(value: Any, error: Exception | None) -> Any:
    if error is not None:
        raise error
    return value


def _store_failed(result: ExecutionResult) -> bool:
    return any(
        isinstance(error, GraphQLError) and isinstance(error.original_error, STORE_FAILURES)
        for error in result.errors or ()
    )


def _errors(result: ExecutionResult) -> list[tuple[Any, ...]]:
    """Errors as comparable tuples, in path order: sibling awaitables may settle in
    another order on a second run, whose loaders already hold the records."""
    found = []
    for error in result.errors or ():
        assert isinstance(error, GraphQLError)
        original = error.original_error
        found.append(
            (
                error.message,
                error.path,
                [(loc.line, loc.column) for loc in error.locations or ()],
                error.extensions,
                type(original).__name__ if original is not None else None,
            )
        )
    return sorted(found, key=repr)


__all__ = ["DifferentialExecutionContext", "take_mismatches"]
