"""The extension that holds each operation within `RequestLimits` before it executes.

Order, each step only if the one before passed:

1. the document's shape (depth, aliases, root fields, fields) on the syntax tree,
   before validation, so a pathological document costs no validation;
2. validation;
3. the list-argument rule (`arguments.py`), with this request's variables;
4. the static cost (`cost.py`) with the same variables, against `max_cost`. The
   estimate goes on the request context (`RequestContext.cost`) before execution
   starts, and into the response's `extensions.cost` with the actual cost after.

Steps 1 and 2, and what 3 and 4 need from the document, depend on the document
alone: they run once per document and operation and are kept in a `PlanCache`. A
refusal becomes the operation's pre-execution errors, so HTTP and WebSocket
transports report it as they report a validation error. Strawberry's
`ValidationCache` cannot come first (it validates on entering its hook and
overwrites earlier errors), so it is not used; this cache does its work.

Execution then runs under a deadline (subscriptions excepted: they live as long as
their client wants); past it the work is cancelled and the answer is
REQUEST_TIMEOUT.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FragmentDefinitionNode,
    GraphQLError,
    GraphQLSchema,
    OperationDefinitionNode,
    get_operation_ast,
)
from strawberry.extensions import MaxTokensLimiter, SchemaExtension
from strawberry.schema.schema import validate_document
from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

from gateway.limits.arguments import ArgumentRules
from gateway.limits.cost import CostPlan
from gateway.limits.options import RequestLimits
from gateway.limits.refusal import TooComplex
from gateway.limits.shape import DocumentShape, measure
from gateway.parsing import CACHED_TOKENS, document_tokens
from resolvers.cost import OperationCost
from resolvers.errors import ErrorCode
from stores.cache.lru import Lru

if TYPE_CHECKING:
    from gateway.prepared import PreparedOperations


@dataclass(frozen=True, slots=True)
class DocumentPlan:
    """What one document and operation need checked; `errors` refuse it outright."""

    errors: tuple[GraphQLError, ...]
    arguments: ArgumentRules | None = None
    cost: CostPlan | None = None


_PlanKey = tuple[str, str | None, tuple[type, ...]]


class PlanCache(Lru[_PlanKey, DocumentPlan]):
    """Plans by document text, operation name and validation rules, least recently
    used dropped first. One per app, shared by its requests."""

    __slots__ = ()

    def __init__(self, maxsize: int = 256) -> None:
        # A plan keeps nodes of its document, and so the document's tokens.
        super().__init__(maxsize, CACHED_TOKENS)


def shape_refusal(shape: DocumentShape, limits: RequestLimits) -> TooComplex | None:
    checks = (
        (shape.depth, limits.max_depth, "is nested {:,} levels deep", "POLYGRAPH_MAX_DEPTH"),
        (shape.aliases, limits.max_aliases, "has {:,} aliases", "POLYGRAPH_MAX_ALIASES"),
        (
            shape.root_fields,
            limits.max_root_fields,
            "asks for {:,} root fields",
            "POLYGRAPH_MAX_ROOT_FIELDS",
        ),
        (
            shape.fields,
            limits.max_fields,
            "has {:,} fields once its fragments are expanded",
            "POLYGRAPH_MAX_FIELDS",
        ),
    )
    for value, maximum, what, setting in checks:
        if value > maximum:
            return TooComplex(f"The operation {what.format(value)}", value, maximum, setting)
    return None


# graphql-core's parser reports its limits as syntax errors with these messages.
_PARSER_LIMITS = (
    (re.compile(r"Document contains more than (\d+) (tokens|comments)"), "POLYGRAPH_MAX_TOKENS"),
    (re.compile(r"Source contains more than (\d+) code points"), "POLYGRAPH_MAX_DOCUMENT_CHARS"),
)


class ParseLimiter(MaxTokensLimiter):
    """Strawberry's token limiter, plus the document's length as a parser option (the
    transports check it first; this covers documents that arrive another way), with
    the parser's refusals named and coded like every other limit."""

    def __init__(self, *, limits: RequestLimits) -> None:
        super().__init__(max_token_count=limits.max_tokens)
        self._max_chars = limits.max_document_chars

    def on_operation(self) -> Iterator[None]:
        # A graphql-core 3.3 option that Strawberry's `ParseOptions` does not list yet.
        options = self.execution_context.parse_options
        options["max_source_length"] = self._max_chars  # type: ignore[typeddict-unknown-key]
        yield from super().on_operation()

    def on_parse(self) -> Iterator[None]:
        yield
        for error in self.execution_context.pre_execution_errors or ():
            for pattern, setting in _PARSER_LIMITS:
                if found := pattern.search(error.message):
                    maximum = int(found.group(1))
                    what = found.group(2) if found.lastindex == 2 else "characters"
                    refusal = TooComplex(
                        f"The document has more than {maximum:,} {what}",
                        f"more than {maximum}",
                        maximum,
                        setting,
                    )
                    error.message = refusal.message
                    error.extensions = refusal.extensions


class RequestLimiter(SchemaExtension):
    """Pass a factory (`functools.partial(RequestLimiter, limits=..., plans=...)`): the
    plans are shared, the extension is per request."""

    def __init__(
        self, *, limits: RequestLimits, plans: PlanCache, prepared: PreparedOperations | None = None
    ) -> None:
        super().__init__()
        self._limits = limits
        self._plans = plans
        # Where a query that passed every check is offered to (gateway/prepared.py).
        self._prepared = prepared
        self._cost_plan: CostPlan | None = None
        self._requested: int | None = None
        self._subscription: bool | None = None

    def _is_subscription(self) -> bool:
        # Strawberry works the operation type out of the document on every read; a
        # subscription reads it twice per event.
        if self._subscription is None:
            operation_type = self.execution_context.operation_type
            self._subscription = operation_type is OperationType.SUBSCRIPTION
        return self._subscription

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        plan = self._plan(context)
        errors = list(plan.errors)
        if not errors and plan.arguments is not None:
            errors.extend(plan.arguments.check(context.variables))
        if not errors and plan.cost is not None:
            self._cost_plan = plan.cost
            self._requested = plan.cost.requested(context.variables)
            _set_cost(context.context, OperationCost(self._requested))
            if self._requested > self._limits.max_cost:
                refusal = TooComplex(
                    f"The operation's estimated cost is {self._requested:,}",
                    self._requested,
                    self._limits.max_cost,
                    "POLYGRAPH_MAX_COST",
                )
                errors.append(refusal.error())
        if (
            self._prepared is not None
            and not errors
            and plan.arguments is not None
            and plan.cost is not None
        ):
            self._prepared.offer(context, _requested_operation(context), plan.arguments, plan.cost)
        # Set, even empty: Strawberry then skips its own validation.
        context.pre_execution_errors = errors
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        if self._is_subscription():
            yield
            return
        deadline = self._limits.deadline_s
        try:
            async with asyncio.timeout(deadline):
                yield
        except TimeoutError:
            # Raised with its code: an error escaping the hooks is never classified.
            raise past_deadline(deadline) from None

    def get_results(self) -> dict[str, Any]:
        """`extensions.cost` of a query or mutation; a subscription's events get theirs
        in `on_stream_result`."""
        if self._cost_plan is None or self._is_subscription():
            return {}
        data = getattr(self.execution_context.result, "data", None)
        return {"cost": self._report(self._cost_plan.actual(data))}

    def on_stream_result(self, result: Any) -> Iterator[None]:
        if self._cost_plan is not None and self._is_subscription():
            actual = _event_actual(self._cost_plan, getattr(result, "data", None))
            result.extensions = {**(result.extensions or {}), "cost": self._report(actual)}
        yield

    def _report(self, actual: int) -> dict[str, int]:
        assert self._requested is not None
        return report_cost(
            self.execution_context.context, self._requested, actual, self._limits.max_cost
        )

    def _plan(self, context: ExecutionContext) -> DocumentPlan:
        document = context.graphql_document
        assert document is not None
        if context.query is None:
            return self._make_plan(context.schema._schema, document, context)
        key = (context.query, _requested_operation(context), tuple(context.validation_rules))
        plan = self._plans.get(key)
        if plan is None:
            plan = self._make_plan(context.schema._schema, document, context)
            self._plans.put(key, plan, document_tokens(document))
        return plan

    def _make_plan(
        self, schema: GraphQLSchema, document: DocumentNode, context: ExecutionContext
    ) -> DocumentPlan:
        refusal = shape_refusal(measure(document), self._limits)
        if refusal is not None:
            return DocumentPlan((refusal.error(),))
        errors = validate_document(schema, document, context.validation_rules)
        if errors:
            return DocumentPlan(tuple(errors))
        requested = _requested_operation(context)
        if requested is None and _operation_count(document) > 1:
            # As the spec asks; Strawberry would run the first one.
            return DocumentPlan(
                (
                    GraphQLError(
                        "The document has several operations: name the one to run in"
                        " `operationName`.",
                        extensions={"code": ErrorCode.BAD_REQUEST.value},
                    ),
                )
            )
        operation = get_operation_ast(document, requested)
        if operation is None:
            return DocumentPlan(())
        fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        arguments = ArgumentRules.of(
            schema, operation, fragments, max_list_length=self._limits.max_list_length
        )
        return DocumentPlan((), arguments, CostPlan.of(schema, operation, fragments))


def past_deadline(deadline_s: float) -> GraphQLError:
    return GraphQLError(
        f"The operation ran past its {deadline_s:g} s deadline"
        " (POLYGRAPH_REQUEST_DEADLINE_S) and was cancelled. Ask for less, or retry.",
        extensions={"code": ErrorCode.REQUEST_TIMEOUT.value},
    )


def _requested_operation(context: ExecutionContext) -> str | None:
    # `operation_name` falls back to the first operation's name; the client's own is here.
    name: str | None = getattr(context, "_provided_operation_name", None)
    return name


def _operation_count(document: DocumentNode) -> int:
    return sum(isinstance(node, OperationDefinitionNode) for node in document.definitions)


# The last subscription event's data and actual cost: the subscribers an event's one
# execution serves (gateway/engine/events.py) get the same data object, one after
# another. Holding it keeps one event's result alive until the next event.
_last_event: tuple[CostPlan, object, int] | None = None


def _event_actual(plan: CostPlan, data: object) -> int:
    global _last_event
    last = _last_event
    if last is not None and last[0] is plan and last[1] is data:
        return last[2]
    actual = plan.actual(data)
    _last_event = (plan, data, actual)
    return actual


def report_cost(context: object, requested: int, actual: int, maximum: int) -> dict[str, int]:
    """`extensions.cost`, with the actual cost set on the request's context too."""
    _set_cost(context, OperationCost(requested, actual))
    return {"requested": requested, "actual": actual, "maximum": maximum}


def _set_cost(context: object, cost: OperationCost) -> None:
    # `RequestContext.cost`; contexts of other shapes (tests' own) are left alone.
    if hasattr(context, "cost"):
        context.cost = cost
