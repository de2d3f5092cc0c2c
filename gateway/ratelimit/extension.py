"""Charges an operation's cost to its caller just before it executes.

The cost is the request's own points (`RateLimitPolicy.request`) plus
`RequestContext.cost.requested` (the static cost model's estimate, set by
`gateway.limits.RequestLimiter` once the operation passed validation and every
request limit), at least 1, and one login attempt per `login` field. Over HTTP the
body's points (counted by the middleware) go into the same charge, one round trip
for the whole request; if it is refused, the request's own and body points are
still taken when they fit, in that same call. Over a WebSocket each operation,
subscriptions included, is charged here when it starts. A refused operation does
not execute: HTTP answers 429 with `Retry-After` (gateway.errors maps the
RATE_LIMITED error), a subscription gets a RATE_LIMITED error and completes.

List it after `RequestLimiter` in the schema's extensions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    SelectionSetNode,
)
from graphql.utilities import get_operation_ast
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gateway.ratelimit.middleware import usage_of
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode

LOGIN_FIELD = "login"


class RateLimiting(SchemaExtension):
    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        limits = context.stores.rate_limits if isinstance(context, RequestContext) else None
        if limits is None or not limits.enabled:
            yield
            return
        assert isinstance(context, RequestContext)
        operation_type = execution.operation_type
        document = execution.graphql_document
        logins = (
            0
            if document is None
            else login_attempts(document, execution.operation_name, operation_type)
        )
        refusal = await charge_operation(context, logins=logins)
        if refusal is not None:
            if operation_type is OperationType.SUBSCRIPTION:
                # Streams do not look at a preset result; Strawberry turns this into
                # the subscription's one error.
                assert isinstance(refusal.original_error, ClientError)
                raise refusal.original_error
            # A preset result stands in for execution: nothing runs.
            execution.result = ExecutionResult(data=None, errors=[refusal])
        yield


async def charge_operation(context: RequestContext, *, logins: int = 0) -> GraphQLError | None:
    """Charges the operation's estimated cost (with what the HTTP middleware left
    owing) and `logins` sign-ins; the refusal to answer with, if its caller is over a
    limit. Whichever way the operation runs (gateway/prepared.py)."""
    limits = context.stores.rate_limits
    if limits is None or not limits.enabled:
        return None
    usage = usage_of(context.connection.scope)
    cost = limits.request_cost(requested_cost(context))
    minimum = 0
    if usage is not None and not usage.charged:
        # Over HTTP: what the middleware left owing, in the same charge.
        cost += usage.body_points
        minimum = usage.owed
    if not cost and not logins:
        return None
    client = context.connection.client
    address = client.host if client else None
    outcome = None if logins else limits.charge_from_lease(context.principal, address, cost)
    if outcome is None:
        outcome = await limits.charge(
            context.principal, address, cost=cost, logins=logins, minimum=minimum
        )
    if usage is not None:
        usage.record(outcome)
    if outcome.allowed:
        return None
    refusal = ClientError(ErrorCode.RATE_LIMITED, outcome.message())
    # No time to come back for an operation dearer than the whole quota.
    retry = {} if outcome.oversized else {"retryAfter": outcome.decision.retry_after_s}
    return GraphQLError(refusal.message, original_error=refusal, extensions=retry)


def requested_cost(context: RequestContext) -> int:
    """The operation's estimated cost, at least 1; 1 when there is no estimate."""
    cost = getattr(context, "cost", None)
    requested = getattr(cost, "requested", None)
    return max(requested, 1) if isinstance(requested, int) else 1


def login_attempts(document: DocumentNode, operation_name: str | None, kind: OperationType) -> int:
    """The sign-in attempts an operation of `kind` makes: a mutation's `login` fields.
    Whichever way the operation runs (gateway/prepared.py)."""
    if kind is not OperationType.MUTATION:
        return 0
    return count_root_fields(document, operation_name, LOGIN_FIELD)


def count_root_fields(document: DocumentNode, operation_name: str | None, name: str) -> int:
    """How many times the operation selects root field `name`, through fragments too."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return 0
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    # Fields with the same response key merge into one execution.
    keys: set[str] = set()
    pending: list[SelectionSetNode] = [operation.selection_set]
    seen: set[str] = set()
    while pending:
        for selection in pending.pop().selections:
            if isinstance(selection, FieldNode):
                if selection.name.value == name:
                    keys.add(selection.alias.value if selection.alias else name)
            elif isinstance(selection, InlineFragmentNode):
                pending.append(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = fragments.get(selection.name.value)
                if fragment is not None and fragment.name.value not in seen:
                    seen.add(fragment.name.value)
                    pending.append(fragment.selection_set)
    return len(keys)
