"""The short way for a query or mutation document this gateway has run before.

Strawberry takes every operation through its extensions: a dozen objects built per
request, each hook a generator entered and left at five stages, then graphql-core's
`execute` building an executor out of the document. For an operation whose document
was parsed, validated and planned when it first came (that first time by Strawberry's
way), what those stages find out is known, and `PreparedPath` runs the rest as plain
calls, in the extensions' order and with the functions they call:

1. the list-argument rule and the cost estimate with this request's variables
   (`RequestLimiter`); a request either would refuse goes Strawberry's way, which
   answers it as always;
2. under the deadline: the rate-limit charge (`RateLimiting`, with a mutation's
   `login` fields as sign-in attempts), a slot of the caller's for an expensive
   operation (`ExpensiveOperationGate`), the variables' coercion and the planned
   executor, and after a mutation that wrote, this process's cached copies of what it
   changed dropped (`SettleEntityCache`); a refusal is the answer;
3. every error coded and logged once (`ErrorCodes`), the loaders let go, the metrics
   and the slow-operation log (`OperationHooks`), the cost report.

Only documents `RequestLimiter` offers are kept (`PreparedOperations.offer`): a query
or mutation (not a subscription) that passed every check, with no `@cached` mark (the
query cache's), sent without `extensions` (persisted documents, APQ). The app builds
the path only when it runs no extension the path does not stand in for: tracing spans,
replica routing, trusted documents only (see `gateway.app`). Each way's answers to
queries are compared in tests/integration/api/test_differential.py, and every test
that sends a document twice takes this path the second time; what it saves is in
bench/profile_notes.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from graphql import (
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLSchema,
    OperationDefinitionNode,
    Undefined,
    get_operation_ast,
    is_leaf_type,
    is_non_null_type,
)
from graphql import (
    OperationType as OperationTypeNode,
)
from graphql.execution import ExecutionResult as CoreResult
from graphql.execution import default_field_resolver, default_type_resolver
from graphql.execution.collect_fields import FragmentDetails
from graphql.execution.get_variable_signature import (
    GraphQLVariableSignature,
    get_variable_signature,
)
from graphql.execution.values import (
    VariableValues,
    VariableValuesOrErrors,
    VariableValueSource,
    get_variable_values,
)
from strawberry.execution import optimized_is_awaitable
from strawberry.types import ExecutionContext, ExecutionResult
from strawberry.types.graphql import OperationType

from gateway.cache_settle import settle_writes
from gateway.engine.executor import PlannedExecutionContext
from gateway.errors import classify_all
from gateway.limits.arguments import ArgumentRules
from gateway.limits.concurrency import ExpensiveOperations, TooManyExpensive, caller_key
from gateway.limits.cost import CostPlan
from gateway.limits.extension import past_deadline, report_cost
from gateway.limits.options import RequestLimits
from gateway.logs import name_operation
from gateway.operation_hooks import operation_finished
from gateway.parsing import CACHED_TOKENS, document_tokens
from gateway.prometheus import GatewayMetrics
from gateway.ratelimit.extension import charge_operation, login_attempts
from resolvers.context import RequestContext
from resolvers.cost import OperationCost
from stores.cache.lru import Lru

# graphql-core's default, as `execute` passes it.
_MAX_COERCION_ERRORS = 50


@dataclass(frozen=True, slots=True)
class PreparedOperation:
    """A validated document and its query or mutation, with what executing it needs."""

    arguments: ArgumentRules
    cost: CostPlan
    operation: OperationDefinitionNode
    fragment_definitions: dict[str, FragmentDefinitionNode]
    fragments: dict[str, FragmentDetails]
    # As Strawberry names the operation for logs and metrics: its own name.
    name: str | None
    kind: OperationType
    # The `login` root fields of a mutation, each charged as a sign-in attempt.
    logins: int
    # Each variable's signature, its coercion and whether it is required, when every
    # one is a scalar, an enum or a list of them, without a default.
    plain_variables: tuple[_PlainVariable, ...] | None


class PreparedOperations:
    """Prepared operations by document text and the operation name the client sent,
    least recently used dropped first. One per app, shared by its requests."""

    def __init__(self, maxsize: int = 256) -> None:
        # Bounded in tokens too: an operation keeps its whole document alive.
        self._operations: Lru[tuple[str, str | None], PreparedOperation] = Lru(
            maxsize, CACHED_TOKENS
        )

    def __len__(self) -> int:
        return len(self._operations)

    def get(self, query: str, operation_name: str | None) -> PreparedOperation | None:
        return self._operations.get((query, operation_name))

    def offer(
        self,
        context: ExecutionContext,
        requested_operation: str | None,
        arguments: ArgumentRules,
        cost: CostPlan,
    ) -> None:
        """Keeps the operation `context` validated, if the prepared path can run it;
        `requested_operation` is the name the client sent."""
        query = context.query
        document = context.graphql_document
        if query is None or document is None or context.operation_extensions:
            return
        key = (query, requested_operation)
        if key in self._operations:
            return
        operation = get_operation_ast(document, requested_operation)
        if operation is None or operation.operation is OperationTypeNode.SUBSCRIPTION:
            return
        kind = OperationType(operation.operation.value)
        if any(directive.name.value == "cached" for directive in operation.directives or ()):
            return
        fragment_definitions = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        # Fragment arguments (experimental) need per-spread variables: not prepared.
        if any(definition.variable_definitions for definition in fragment_definitions.values()):
            return
        self._operations.put(
            key,
            PreparedOperation(
                arguments,
                cost,
                operation,
                fragment_definitions,
                {name: FragmentDetails(node, None) for name, node in fragment_definitions.items()},
                operation.name.value if operation.name else None,
                kind,
                login_attempts(document, requested_operation, kind),
                _plain_variables(context.schema._schema, operation),
            ),
            document_tokens(document),
        )


class PreparedPath:
    """Runs prepared queries (see the module docstring)."""

    def __init__(
        self,
        schema: GraphQLSchema,
        executor_class: type[PlannedExecutionContext],
        queries: PreparedOperations,
        limits: RequestLimits,
        expensive: ExpensiveOperations,
        *,
        slow_operation_s: float,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.queries = queries
        self._schema = schema
        self._executor_class = executor_class
        self._limits = limits
        self._expensive = expensive
        self._slow_operation_s = slow_operation_s
        self._metrics = metrics

    async def run(
        self,
        query: str,
        variables: dict[str, Any] | None,
        operation_name: str | None,
        context: RequestContext,
    ) -> ExecutionResult | None:
        """The operation's result, or None if it must go Strawberry's way."""
        prepared = self.queries.get(query, operation_name)
        if prepared is None or prepared.arguments.check(variables):
            return None
        requested = prepared.cost.requested(variables)
        if requested > self._limits.max_cost:
            return None
        started = time.perf_counter()
        name_operation(prepared.name)
        context.cost = OperationCost(requested)
        deadline_s = self._limits.deadline_s
        # As `RequestLimiter.on_execute` holds everything after it: the charge, a wait
        # for an expensive slot and the execution.
        try:
            async with asyncio.timeout(deadline_s):
                result = await self._charged_and_executed(prepared, variables, context, requested)
        except TimeoutError:
            result = CoreResult(None, [past_deadline(deadline_s)])
        except Exception as exc:
            # As Strawberry reports an error escaping the operation's work.
            result = CoreResult(None, [GraphQLError(str(exc), original_error=exc)])
        errors = classify_all(result.errors, context.request_id) if result.errors else None
        operation_finished(
            context,
            prepared.name,
            prepared.kind,
            time.perf_counter() - started,
            errors or (),
            slow_s=self._slow_operation_s,
            metrics=self._metrics,
        )
        actual = prepared.cost.actual(result.data)
        cost = report_cost(context, requested, actual, self._limits.max_cost)
        return ExecutionResult(data=result.data, errors=errors, extensions={"cost": cost})

    async def _charged_and_executed(
        self,
        prepared: PreparedOperation,
        variables: dict[str, Any] | None,
        context: RequestContext,
        requested: int,
    ) -> CoreResult:
        refusal = await charge_operation(context, logins=prepared.logins)
        if refusal is not None:
            return CoreResult(None, [refusal])
        if not self._expensive.applies_to(requested):
            return await self._execute(prepared, variables, context)
        # As `ExpensiveOperationGate`: one of the caller's slots while it executes.
        client = context.connection.client
        key = caller_key(context.principal, client.host if client else None)
        try:
            await self._expensive.acquire(key, context.principal.role)
        except TooManyExpensive as refused:
            return CoreResult(None, [refused.error()])
        try:
            return await self._execute(prepared, variables, context)
        finally:
            self._expensive.release(key)

    async def _execute(
        self, prepared: PreparedOperation, variables: dict[str, Any] | None, context: RequestContext
    ) -> CoreResult:
        values: VariableValuesOrErrors | None = _coerced_plainly(
            prepared.plain_variables, variables or {}
        )
        if values is None:
            values = get_variable_values(
                self._schema,
                prepared.operation.variable_definitions or (),
                variables or {},
                max_errors=_MAX_COERCION_ERRORS,
            )
        if isinstance(values, list):
            return CoreResult(None, values)
        # As graphql-core's `Executor.build` makes it, from what it worked out.
        executor = self._executor_class(
            self._schema,
            prepared.fragment_definitions,
            prepared.fragments,
            None,
            context,
            prepared.operation,
            values,
            default_field_resolver,
            default_type_resolver,
            default_field_resolver,
            is_awaitable=optimized_is_awaitable,
            operation_extensions=None,
        )
        result: Any = executor.execute_operation()
        if optimized_is_awaitable(result):
            result = await result
        assert isinstance(result, CoreResult)
        if prepared.kind is OperationType.MUTATION:
            # As `SettleEntityCache`: the caller's next read here sees what it wrote.
            await settle_writes(context)
        return result


def _plain_variables(
    schema: GraphQLSchema, operation: OperationDefinitionNode
) -> tuple[_PlainVariable, ...] | None:
    plain = []
    for definition in operation.variable_definitions or ():
        if definition.default_value is not None or definition.directives:
            return None
        signature = get_variable_signature(schema, definition)
        if isinstance(signature, GraphQLError):
            return None
        coerce = _plain_coercion(signature.type)
        if coerce is None:
            return None
        required = is_non_null_type(signature.type)
        plain.append(_PlainVariable(signature, coerce, required))
    return tuple(plain)


def _coerced_plainly(
    plain: tuple[_PlainVariable, ...] | None, variables: dict[str, Any]
) -> VariableValues | None:
    """The variables' coerced values, as graphql-core's coercion would make them,
    without its walk over each value's type (about 4% of a small read's CPU, 6% of a
    request with a list of ids and two dates). None when any is refused or may be:
    graphql-core then coerces them all, with its messages."""
    if plain is None:
        return None
    sources: dict[str, VariableValueSource] = {}
    coerced: dict[str, Any] = {}
    try:
        for signature, coerce, required in plain:
            name = signature.name
            if name in variables:
                value = variables[name]
                sources[name] = VariableValueSource(signature, value)
                coerced[name] = coerce(value)
            elif required:
                return None
            else:
                sources[name] = VariableValueSource(signature)
    except _NotPlain:
        return None
    return VariableValues(sources, coerced)


class _NotPlain(Exception):
    """A value graphql-core must coerce (or refuse) itself."""


class _PlainVariable(NamedTuple):
    signature: GraphQLVariableSignature
    # The value sent to its coerced value; raises `_NotPlain` for graphql-core's way.
    coerce: Callable[[Any], Any]
    required: bool


# Built-in scalars whose coerced value is the JSON value itself, by its Python type
# (an ID sent as a number is coerced to a string: graphql-core's way).
_PLAIN_SCALARS: dict[str, type] = {"ID": str, "String": str, "Boolean": bool}


def _plain_coercion(type_: GraphQLInputType) -> Callable[[Any], Any] | None:
    """graphql-core's `coerce_input_value` for a scalar or enum, or a list of them,
    nullable or not, for the values it takes as they are (None: input objects,
    nested lists, which it walks)."""
    required = is_non_null_type(type_)
    nullable = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if not isinstance(nullable, GraphQLList):
        return _leaf_coercion(type_)
    coerce_item = _leaf_coercion(nullable.of_type)
    if coerce_item is None:
        return None

    def coerce_list(value: Any) -> Any:
        # A value that is not a list is coerced as a list of one: graphql-core's way.
        if type(value) is list:
            return [coerce_item(item) for item in value]
        if value is None and not required:
            return None
        raise _NotPlain

    return coerce_list


def _leaf_coercion(type_: GraphQLInputType) -> Callable[[Any], Any] | None:
    required = is_non_null_type(type_)
    leaf = type_.of_type if isinstance(type_, GraphQLNonNull) else type_
    if not is_leaf_type(leaf):
        return None
    kind = _PLAIN_SCALARS.get(leaf.name)
    if kind is not None:

        def taken_as_sent(value: Any) -> Any:
            if type(value) is kind or (value is None and not required):
                return value
            raise _NotPlain

        return taken_as_sent
    parse = leaf.coerce_input_value

    def parsed(value: Any) -> Any:
        # What graphql-core calls for a leaf; what it refuses, it reports.
        if value is None:
            if required:
                raise _NotPlain
            return None
        try:
            result = parse(value)
        except Exception:
            raise _NotPlain from None
        if result is Undefined:
            raise _NotPlain
        return result

    return parsed
