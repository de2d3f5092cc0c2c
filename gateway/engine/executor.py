"""The planned executor: graphql-core's execution algorithm, run from a cached plan.

`PlannedExecutionContext` is Strawberry's execution context (so Strawberry's
extension hooks, resolver wrappers, permission checks and error handling run as
they always do) with graphql-core's field execution and value completion replaced
by the same algorithm over an `ObjectPlan`:

- Fields whose resolver is Strawberry's basic one are read as attributes, without a
  resolve info, argument coercion or a response path; leaves are serialized on the
  spot. A path is built only when an error needs one.
- Every other field gets what graphql-core gives it: a resolve info, its coerced
  arguments (coerced once per request, not once per object) and its resolver,
  wrapped by any resolver middleware.
- Awaitables, null propagation, error locations and paths, and the order of fields
  and errors follow graphql-core: sibling awaitables are gathered (cancelled when
  one fails a non-null field), errors are recorded at the nearest nullable field.

What the plan does not cover falls back to graphql-core's own code for that value:
async-iterable lists, awaitable `is_type_of` or `resolve_type` results, an abort
signal, fragment arguments, incremental delivery.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Hashable, Iterable
from typing import Any, ClassVar, cast

from graphql import GraphQLError, GraphQLResolveInfo
from graphql.execution.executor import (
    Executor,
    collect_iterator_awaitables,
    invalid_return_type_error,
)
from graphql.execution.types import ExecutionResult, ExperimentalIncrementalExecutionResults
from graphql.execution.values import get_argument_values
from graphql.pyutils import AwaitableOrValue, Path, Undefined, is_iterable
from graphql.pyutils.async_reduce import async_reduce
from graphql.pyutils.gather_with_cancel import gather_with_cancel
from graphql.type.definition import GraphQLResolveInfoHelpers
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.engine.events import Scope, SharedEvents, SharedResult, freeze
from gateway.engine.items import complete_plain_items
from gateway.engine.plan import (
    CAST_ATTRIBUTE,
    LEAF,
    LEAF_SHAPE,
    LIST_SHAPE,
    OBJECT_SHAPE,
    RESOLVE,
    TYPENAME,
    AbstractShape,
    FieldPlan,
    LeafShape,
    ListShape,
    ObjectPlan,
    OperationPlan,
    PlanCache,
    Shape,
    SplitArguments,
)
from gateway.engine.resolvers import DirectResolver
from gateway.engine.rows import complete_row_edges
from gateway.engine.series import complete_series_rows
from schema.metrics import MetricSeriesRows
from schema.rows import RowEdges
from schema.settled import SETTLED_NULL, SettledValue

Result = AwaitableOrValue[Any]
Info = GraphQLResolveInfo[Any]


class PlannedExecutionContext(StrawberryGraphQLCoreExecutionContext):
    """Runs each operation from its cached plan (see the module docstring)."""

    plans: ClassVar[PlanCache] = PlanCache()
    # Who may share a subscription event's result (see gateway/engine/events.py).
    share_events_by: ClassVar[Scope | None] = None
    shared_events: ClassVar[SharedEvents] = SharedEvents()

    # Per execution: coerced arguments of fields whose arguments read variables.
    _arguments: dict[FieldPlan, dict[str, Any]]
    # Per execution: Strawberry's arguments of directly called resolvers, when immutable.
    _converted: dict[FieldPlan, dict[str, Any]]
    # Per execution: what answers a field from what a parent loaded (schema/settled.py).
    _settled: dict[FieldPlan, SettledValue | None]
    # A subscription's sharing key, worked out at its first event (False: none).
    _event_key: Hashable | None = None
    # A per-event executor whose result the other subscribers take: (results, key).
    _sharing: tuple[dict[Hashable, Any], Hashable] | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.async_helpers = _helpers_of(self)

    def execute_operation(
        self, serially: bool | None = None
    ) -> AwaitableOrValue[ExecutionResult | ExperimentalIncrementalExecutionResults]:
        if not self._plannable():
            return super().execute_operation(serially)
        result = self._execute_operation(serially)
        if self._sharing is not None:
            shared, key = self._sharing
            if self.is_awaitable(result):
                future = shared[key] = asyncio.ensure_future(result)
                return SharedResult(future).execute_operation()  # type: ignore[no-any-return]
            shared[key] = result
        return result

    def _execute_operation(
        self, serially: bool | None
    ) -> AwaitableOrValue[ExecutionResult | ExperimentalIncrementalExecutionResults]:
        self._arguments = {}
        self._converted = {}
        self._settled = {}
        try:
            plan = self.plans.plan(self)
            if serially is None:
                serially = self.operation.operation.value == "mutation"
            run = self._execute_fields_serially if serially else self._execute_fields
            result = run(plan.root, self.root_value, None)
            if self.is_awaitable(result):
                return self._await_operation(cast(Awaitable[dict[str, Any]], result))
        except GraphQLError as error:
            self.collected_errors.add(error, None)
            return self.build_response(None)
        return self.build_response(cast(dict[str, Any], result))

    def build_per_event_executor(self, payload: Any) -> PlannedExecutionContext:
        key = self._sharing_key()
        shared = None if key is None else self.shared_events.results_of(payload)
        if shared is not None:
            entry = shared.get(key)
            if entry is not None:
                return SharedResult(entry)  # type: ignore[return-value]
        executor = cast(PlannedExecutionContext, super().build_per_event_executor(payload))
        executor._arguments = {}
        executor._converted = {}
        executor._settled = {}
        executor._sharing = None if shared is None else (shared, key)
        return executor

    def _sharing_key(self) -> Hashable | None:
        key = self._event_key
        if key is None:
            key = self._event_key = self._work_out_sharing_key()
        return None if key is False else key

    def _work_out_sharing_key(self) -> Hashable:
        share_by = self.share_events_by
        if share_by is None or not self._plannable():
            return False
        scope = share_by(self.context_value)  # type: ignore[call-arg]
        if scope is None:
            return False
        try:
            variables = freeze(self.variable_values.coerced)
        except TypeError:
            return False
        return (self.plans.plan(self), variables, scope)

    def operation_plan(self) -> OperationPlan:
        return self.plans.plan(self)

    def _plannable(self) -> bool:
        if self.abort_signal is not None or not self.error_propagation:
            return False
        # Fragment arguments (experimental) give fields per-spread variables.
        return not any(fragment.variable_signatures for fragment in self.fragments.values())

    async def _await_operation(
        self, result: Awaitable[dict[str, Any]]
    ) -> ExecutionResult | ExperimentalIncrementalExecutionResults:
        try:
            data = await result
        except GraphQLError as error:
            self.collected_errors.add(error, None)
            return self.build_response(None)
        except Exception:
            await self.cancel_incremental_work()
            self.run_async_work_finished_hook()
            raise
        return self.build_response(data)

    # Selection sets

    def _execute_fields(
        self, plan: ObjectPlan, source: Any, path: Path | None
    ) -> AwaitableOrValue[dict[str, Any]]:
        """graphql-core's `execute_fields`, compiled per plan (gateway/engine/compile.py)."""
        return plan.compiled(self)(self, source, path)  # type: ignore[no-any-return]

    async def _gather_fields(
        self, results: dict[str, Any], awaitable_keys: list[str]
    ) -> dict[str, Any]:
        if len(awaitable_keys) == 1:
            key = awaitable_keys[0]
            results[key] = await results[key]
        else:
            awaited = await gather_with_cancel(*(results[key] for key in awaitable_keys))
            results.update(zip(awaitable_keys, awaited, strict=True))
        return results

    def _execute_fields_serially(
        self, plan: ObjectPlan, source: Any, path: Path | None
    ) -> AwaitableOrValue[dict[str, Any]]:
        """graphql-core's `execute_fields_serially` (mutations), over a plan."""
        is_awaitable = self.is_awaitable

        def reducer(results: dict[str, Any], field: FieldPlan) -> AwaitableOrValue[dict[str, Any]]:
            field_path = Path(path, field.key, field.parent_name)
            if field.mode == TYPENAME:
                results[field.key] = field.parent_name
                return results
            result = self._execute_field(field, source, field_path)
            if is_awaitable(result):

                async def set_result() -> dict[str, Any]:
                    results[field.key] = await result
                    return results

                return set_result()
            results[field.key] = result
            return results

        return async_reduce(reducer, plan.fields, {})

    # Fields

    def _execute_field(self, field: FieldPlan, source: Any, path: Path) -> Result:
        """graphql-core's `execute_field`: resolve, then complete."""
        info: Info | None = None
        try:
            if field.mode == RESOLVE:
                settled = self._settled.get(field)
                if settled is not None:
                    value = self._settled_value(settled, source)
                    if value is not None:
                        if value is SETTLED_NULL:
                            value = None
                        completed = self._complete(field, field.shape, None, path, value)
                        if self.is_awaitable(completed):
                            return self._await_completed(field, completed, path)
                        return completed
                info = self._info(field, path)
                args = field.args
                if args is None:
                    args = self._arguments_of(field)
                result = self._resolve(field, source, info, args)
                if self.is_awaitable(result):
                    return self._complete_awaitable(field, info, path, result)
            elif field.mode == LEAF:
                result = getattr(source, field.attribute)  # type: ignore[arg-type]
            else:
                result = getattr(source, field.attribute)  # type: ignore[arg-type]
                if field.shape.needs_info:
                    info = self._info(field, path)
            completed = self._complete(field, field.shape, info, path, result)
            if self.is_awaitable(completed):
                return self._await_completed(field, completed, path)
        except Exception as raw_error:
            self.handle_field_error(raw_error, field.return_type, field.details, path)
            return None
        return completed

    def _resolve(self, field: FieldPlan, source: Any, info: Info, args: dict[str, Any]) -> Any:
        """Call the field's resolver, wrapped by any resolver middleware, as graphql-core does."""
        direct = field.direct
        if direct is not None:
            return self._resolve_directly(field, direct, source, info, args)
        resolve = field.resolve or self.field_resolver
        if self.middleware_manager is not None:
            resolve = self.middleware_manager.get_field_resolver(resolve)
        return resolve(source, info, **args)

    def _resolve_directly(
        self,
        field: FieldPlan,
        direct: DirectResolver,
        source: Any,
        info: Info,
        args: dict[str, Any],
    ) -> Any:
        """Strawberry's wrapper, done by `DirectResolver`; arguments converted once per
        request when they convert to immutable values, once per plan when they are
        literals too."""
        strawberry_info = direct.info(info)
        converted = self._converted.get(field)
        if converted is None:
            converted = field.converted
            shareable = converted is not None
            if converted is None:
                converted, shareable = direct.convert(strawberry_info, args)
                if shareable and field.args is not None:
                    # Literal arguments: the same for every request of this plan.
                    field.converted = converted
            if shareable:
                self._converted[field] = converted
                if direct.settled is not None and not field.shape.needs_info:
                    self._settled[field] = self._prepare_settled(field, direct, converted)
        return direct.call(source, strawberry_info, converted)

    def _prepare_settled(
        self, field: FieldPlan, direct: DirectResolver, converted: dict[str, Any]
    ) -> SettledValue | None:
        """The field's function from a parent to what a parent loaded for it, worked out
        once per execution; None (the resolver for every parent) if that fails."""
        assert direct.settled is not None
        try:
            return direct.settled(
                self.context_value, field.nodes, self.fragment_definitions, converted
            )
        except Exception:
            return None

    @staticmethod
    def _settled_value(settled: SettledValue, source: Any) -> Any:
        """What a parent loaded for the field, or None: the resolver runs then, and
        meets any error at its own path."""
        try:
            return settled(source)
        except Exception:
            return None

    def _info(self, field: FieldPlan, path: Path) -> Info:
        return self.build_resolve_info(field.field_def, field.nodes, field.parent_type, path)

    def _arguments_of(self, field: FieldPlan) -> dict[str, Any]:
        # Variables are fixed for the whole operation: coerce once, not per object.
        arguments = self._arguments.get(field)
        if arguments is None:
            fragment_variable_values = field.details[0].fragment_variable_values
            split = field.split_args
            if split is not None and fragment_variable_values is None:
                arguments = self._joined_arguments(split)
            if arguments is None:
                arguments = get_argument_values(
                    field.field_def,
                    field.node,
                    self.variable_values,
                    fragment_variable_values,
                    self.hide_suggestions,
                )
            self._arguments[field] = arguments
        return arguments

    def _joined_arguments(self, split: SplitArguments) -> dict[str, Any] | None:
        """The arguments coerced once (FieldPlan.split_args) with the variables' values
        as graphql-core takes them; None when a variable is left out (its argument's
        default applies) or null where the argument is non-null (an error)."""
        coerced = self.variable_values.coerced
        arguments: dict[str, Any] = {}
        for name, value, non_null in split:
            if non_null is not None:
                value = coerced.get(value, Undefined)
                if value is Undefined or (value is None and non_null):
                    return None
            arguments[name] = value
        return arguments

    async def _complete_awaitable(
        self, field: FieldPlan, info: Info | None, path: Path, result: Any
    ) -> Any:
        try:
            resolved = await result
            completed = self._complete(field, field.shape, info, path, resolved)
            if self.is_awaitable(completed):
                completed = await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, field.return_type, field.details, path)
            return None
        return completed

    async def _await_completed(
        self, field: FieldPlan, completed: Awaitable[Any], path: Path
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, field.return_type, field.details, path)
            return None

    # Values

    def _complete(
        self,
        field: FieldPlan,
        shape: Shape,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> Result:
        """graphql-core's `complete_value`, with the type's wrappers unfolded in `shape`."""
        if isinstance(result, Exception):
            raise result
        if shape.non_null:
            completed = self._complete_nullable(field, shape, info, path, result)
            if completed is None:
                raise TypeError(field.null_message)
            return completed
        return self._complete_nullable(field, shape, info, path, result)

    def _complete_nullable(
        self,
        field: FieldPlan,
        shape: Shape,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> Result:
        if result is None or result is Undefined:
            return None
        kind = shape.kind
        if kind == LEAF_SHAPE:
            return shape.serialize(result)  # type: ignore[attr-defined]
        if kind == OBJECT_SHAPE:
            plan = shape.plan(self)  # type: ignore[attr-defined]
            return self._complete_object(field, plan, info, path, result)
        if kind == LIST_SHAPE:
            return self._complete_list(field, shape, info, path, result)  # type: ignore[arg-type]
        return self._complete_abstract(field, shape, info, path, result)  # type: ignore[arg-type]

    def _complete_object(
        self,
        field: FieldPlan,
        plan: ObjectPlan,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> AwaitableOrValue[dict[str, Any]]:
        is_type_of = plan.is_type_of
        if is_type_of is not None:
            accepted = plan.accepted
            if accepted is None or type(result) not in accepted or hasattr(result, CAST_ATTRIBUTE):
                # Strawberry's own checks ignore the info; others get the field's (the
                # shape asked for it, see `Shape.needs_info`).
                matches = is_type_of(result, info if plan.is_type_of_needs_info else None)  # type: ignore[arg-type]
                if self.is_awaitable(matches):
                    return self._complete_object_async(field, plan, path, result, matches)
                if not matches:
                    raise invalid_return_type_error(plan.object_type, result, field.details)
                if accepted is not None and not hasattr(result, CAST_ATTRIBUTE):
                    accepted.add(type(result))
        return plan.compiled(self)(self, result, path)  # type: ignore[no-any-return]

    async def _complete_object_async(
        self, field: FieldPlan, plan: ObjectPlan, path: Path, result: Any, matches: Any
    ) -> dict[str, Any]:
        if not await matches:
            raise invalid_return_type_error(plan.object_type, result, field.details)
        completed = self._execute_fields(plan, result, path)
        if self.is_awaitable(completed):
            return await cast(Awaitable[dict[str, Any]], completed)
        return cast(dict[str, Any], completed)  # pragma: no cover

    def _complete_abstract(
        self,
        field: FieldPlan,
        shape: AbstractShape,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> Result:
        by_class = shape.by_class
        if by_class is not None and not hasattr(result, CAST_ATTRIBUTE):
            known = by_class.get(type(result))
            if known is not None:
                return self._complete_object(field, shape.plan(self, known), info, path, result)
        info = info or self._info(field, path)
        abstract_type = shape.abstract_type
        resolve_type = abstract_type.resolve_type or self.type_resolver
        runtime_type = resolve_type(result, info, abstract_type)
        if self.is_awaitable(runtime_type):
            return self._complete_abstract_async(field, shape, info, path, result, runtime_type)
        object_type = self.ensure_valid_runtime_type(
            runtime_type, abstract_type, field.details, info, result
        )
        shape.remember_runtime_type(result, object_type)
        return self._complete_object(field, shape.plan(self, object_type), info, path, result)

    async def _complete_abstract_async(
        self,
        field: FieldPlan,
        shape: AbstractShape,
        info: Info,
        path: Path,
        result: Any,
        runtime_type: Awaitable[Any],
    ) -> Any:
        object_type = self.ensure_valid_runtime_type(
            await runtime_type, shape.abstract_type, field.details, info, result
        )
        value = self._complete_object(field, shape.plan(self, object_type), info, path, result)
        if self.is_awaitable(value):
            return await value
        return value  # pragma: no cover

    def _complete_list(
        self,
        field: FieldPlan,
        shape: ListShape,
        info: Info | None,
        path: Path,
        result: Any,
    ) -> Result:
        """graphql-core's `complete_list_value` and `complete_iterable_value`."""
        if self.is_async_iterable(result):
            # Rare: graphql-core's own code completes it (and everything below it).
            info = info or self._info(field, path)
            return self.complete_list_value(
                shape.list_type,
                field.details,
                info,
                path,
                result,
                None,
            )
        kind = type(result)
        if kind is RowEdges:
            completed_rows = complete_row_edges(self, shape.item, result)
            if completed_rows is not None:
                return completed_rows
        elif kind is MetricSeriesRows:
            completed_series = complete_series_rows(self, shape.item, result)
            if completed_series is not None:
                return completed_series
        if not is_iterable(result):
            msg = (
                "Expected Iterable, but did not find one for field"
                f" '{field.parent_name}.{field.name}'."
            )
            raise GraphQLError(msg)
        item = shape.item
        if type(result) is list:
            if item.kind == LEAF_SHAPE:
                completed = self._complete_leaf_list(cast(LeafShape, item), result)
            else:
                completed = complete_plain_items(self, item, result)
            if completed is not None:
                return completed
        return self._complete_items(field, item, info, path, result)

    @staticmethod
    def _complete_leaf_list(item: LeafShape, items: list[Any]) -> list[Any] | None:
        # Scalars and enums without nulls or errors, the common case, in one pass; any
        # surprise and the caller completes item by item, which reports it exactly.
        serialize = item.serialize
        try:
            completed = [serialize(value) for value in items]
        except Exception:
            return None
        if None in completed or any(value is None for value in items):
            return None
        return completed

    def _complete_items(
        self,
        field: FieldPlan,
        item: Shape,
        info: Info | None,
        path: Path,
        items: Iterable[Any],
    ) -> Result:
        is_awaitable = self.is_awaitable
        completed_results: list[Any] = []
        append = completed_results.append
        awaitable_indices: list[int] | None = None
        iterator = iter(items)
        index = 0
        # Objects of one type, the common list: `_complete` and `_complete_object`
        # inlined (an exception or a null takes the general path below).
        plan = item.plan(self) if item.kind == OBJECT_SHAPE and not item.needs_info else None  # type: ignore[attr-defined]
        accepted = plan.accepted if plan is not None else None
        complete = plan.compiled(self) if plan is not None else None
        try:
            for value in iterator:
                item_path = _new_path(Path, (path, index, None))
                if plan is not None and value is not None and not isinstance(value, Exception):
                    completed: Any
                    try:
                        is_type_of = plan.is_type_of
                        if (
                            is_type_of is not None
                            and accepted is not None
                            and type(value) in accepted
                            and not hasattr(value, CAST_ATTRIBUTE)
                        ):
                            # Accepted before (`ObjectPlan.accepted`).
                            completed = complete(self, value, item_path)  # type: ignore[misc]
                        elif is_type_of is not None:
                            matches = is_type_of(value, None)
                            if is_awaitable(matches):
                                completed = self._complete_object_async(
                                    field, plan, item_path, value, matches
                                )
                            elif not matches:
                                raise invalid_return_type_error(
                                    plan.object_type, value, field.details
                                )
                            else:
                                if accepted is not None and not hasattr(value, CAST_ATTRIBUTE):
                                    accepted.add(type(value))
                                completed = complete(self, value, item_path)  # type: ignore[misc]
                        else:
                            completed = complete(self, value, item_path)  # type: ignore[misc]
                        if type(completed) is dict:
                            append(completed)
                        else:
                            append(self._await_item(field, item, item_path, completed))
                            awaitable_indices = _add(awaitable_indices, index)
                    except Exception as raw_error:
                        self.handle_field_error(
                            raw_error, item.graphql_type, field.details, item_path
                        )
                        append(None)
                elif is_awaitable(value):
                    append(self._complete_awaitable_item(field, item, info, item_path, value))
                    awaitable_indices = _add(awaitable_indices, index)
                else:
                    try:
                        completed = self._complete(field, item, info, item_path, value)
                        if is_awaitable(completed):
                            append(self._await_item(field, item, item_path, completed))
                            awaitable_indices = _add(awaitable_indices, index)
                        else:
                            append(completed)
                    except Exception as raw_error:
                        self.handle_field_error(
                            raw_error, item.graphql_type, field.details, item_path
                        )
                        append(None)
                index += 1
        except Exception:
            pending = [completed_results[i] for i in awaitable_indices or ()]
            pending.extend(collect_iterator_awaitables(iterator, is_awaitable))
            if pending:
                self.settle_in_background(pending)
            raise

        if not awaitable_indices:
            return completed_results
        return self._gather_items(completed_results, awaitable_indices)

    @staticmethod
    async def _gather_items(completed: list[Any], awaitable_indices: list[int]) -> list[Any]:
        if len(awaitable_indices) == 1:
            index = awaitable_indices[0]
            completed[index] = await completed[index]
        else:
            awaited = await gather_with_cancel(*(completed[i] for i in awaitable_indices))
            for index, value in zip(awaitable_indices, awaited, strict=True):
                completed[index] = value
        return completed

    async def _await_item(
        self, field: FieldPlan, item: Shape, item_path: Path, completed: Awaitable[Any]
    ) -> Any:
        try:
            return await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, item.graphql_type, field.details, item_path)
            return None

    async def _complete_awaitable_item(
        self,
        field: FieldPlan,
        item: Shape,
        info: Info | None,
        item_path: Path,
        value: Awaitable[Any],
    ) -> Any:
        try:
            resolved = await value
            completed = self._complete(field, item, info, item_path, resolved)
            if self.is_awaitable(completed):
                completed = await completed
        except Exception as raw_error:
            self.handle_field_error(raw_error, item.graphql_type, field.details, item_path)
            return None
        return completed


# `Path` is a named tuple, whose `__new__` is a Python function; this is what it does.
_new_path = tuple.__new__


def _add(indices: list[int] | None, index: int) -> list[int]:
    if indices is None:
        return [index]
    indices.append(index)
    return indices


def planned_execution_context(
    *, max_plans: int = 1000, share_events_by: Scope | None = None
) -> type[PlannedExecutionContext]:
    """A planned execution context class with its own plan cache (one per schema).

    `share_events_by(context)` gives a subscriber's permission scope: subscribers of
    one event with the same operation, variables and scope share one execution of it
    (None: that subscriber shares nothing)."""
    return type(
        "PlannedExecutionContext",
        (PlannedExecutionContext,),
        {
            "plans": PlanCache(max_plans),
            "share_events_by": staticmethod(share_events_by) if share_events_by else None,
            "shared_events": SharedEvents(),
            "__module__": __name__,
        },
    )


def _helpers_of(executor: Executor[Any]) -> GraphQLResolveInfoHelpers:
    """graphql-core's helpers for resolve infos, holding `executor` weakly. Its own hold
    it through bound methods: a cycle that kept every request's executor, context and
    loaders alive until a garbage collection (54 objects for one agent by id). The
    operation holds its executor for as long as resolvers run."""
    executor_ref = weakref.ref(executor)

    def running() -> Executor[Any]:
        alive = executor_ref()
        if alive is None:
            raise RuntimeError("the operation this resolver belongs to has ended")
        return alive

    def gather(awaitables: Any) -> Any:
        return running().gather_async_work(awaitables)

    def track(awaitables: Any) -> None:
        running().track_async_work(awaitables)

    return GraphQLResolveInfoHelpers(gather=gather, track=track)
