"""How many expensive operations one caller may have executing at once.

Rate limits bound what a caller spends per window; they do not stop it from spending
a whole quota in one burst of concurrent expensive operations, which then share the
event loop and the stores with every other caller at once. An operation whose
estimated cost (`RequestContext.cost`) is at least `ExpensiveOperations.cost`
executes only while its caller has fewer than its role's limit executing; otherwise
it waits its turn, first come first served, in a queue of at most `queue` per
caller, and past that it is refused with RATE_LIMITED (HTTP 429, `Retry-After: 1`)
before anything runs. Cheap operations never wait. Callers are counted as rate
limits count them: a signed-in caller by its user, an anonymous one by its address.

Waiting counts against the request's deadline (`RequestLimiter` starts it first).
Subscriptions are left alone: they live as long as their client. List the extension
after `RateLimiting`, so that an operation is charged before it queues and a
refused one never queues.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from graphql import ExecutionResult, GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from resolvers.auth import Principal, Role
from resolvers.context import RequestContext
from resolvers.errors import ErrorCode

RETRY_AFTER_S = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class ExpensiveOperationOptions:
    """Defaults: the S3 benchmark query (511) and S2 (2,151) are expensive, a page of
    20 agents (41) is not; a person's browser or an anonymous caller runs one at a
    time, operators and admins (dashboards, scripts) many."""

    enabled: bool = True
    cost: int = 500
    anonymous: int = 1
    per_role: Mapping[Role, int] = field(
        default_factory=lambda: MappingProxyType(
            {Role.VIEWER: 1, Role.AGENT: 2, Role.OPERATOR: 16, Role.ADMIN: 16}
        )
    )
    # Operations waiting per caller; 0 refuses whatever cannot start at once.
    queue: int = 16

    def __post_init__(self) -> None:
        if self.cost < 1 or self.anonymous < 1 or self.queue < 0:
            raise ValueError("expensive operations: cost and limits >= 1, queue >= 0")
        if any(limit < 1 for limit in self.per_role.values()):
            raise ValueError("expensive operations: every role's limit must be >= 1")

    def limit(self, role: Role | None) -> int:
        return self.anonymous if role is None else self.per_role.get(role, self.anonymous)


DEFAULT_EXPENSIVE = ExpensiveOperationOptions()


class TooManyExpensive(Exception):
    """The caller's queue of expensive operations is full."""

    def __init__(self, limit: int, queue: int) -> None:
        super().__init__(
            f"Too many expensive operations at once: {limit} may execute and {queue} wait"
            " per caller (POLYGRAPH_EXPENSIVE_CONCURRENCY_<ROLE>,"
            " POLYGRAPH_EXPENSIVE_QUEUE). Send the next when one has answered."
        )

    def error(self) -> GraphQLError:
        """The operation's one error, in place of its result."""
        return GraphQLError(
            str(self),
            extensions={"code": ErrorCode.RATE_LIMITED.value, "retryAfter": RETRY_AFTER_S},
        )


@dataclass(slots=True)
class _Caller:
    running: int = 0
    waiting: deque[asyncio.Future[None]] = field(default_factory=deque)


class ExpensiveOperations:
    """Every caller's executing and waiting expensive operations; one per app, used on
    its event loop."""

    def __init__(self, options: ExpensiveOperationOptions | None = None) -> None:
        self.options = options or ExpensiveOperationOptions()
        self._callers: dict[str, _Caller] = {}
        # Since the app started: operations that waited, and those refused.
        self.waited = 0
        self.refused = 0

    def applies_to(self, requested: int) -> bool:
        """Whether an operation of this estimated cost needs one of its caller's slots."""
        return self.options.enabled and requested >= self.options.cost

    def running(self, key: str) -> int:
        caller = self._callers.get(key)
        return caller.running if caller else 0

    def waiting(self, key: str) -> int:
        caller = self._callers.get(key)
        return len(caller.waiting) if caller else 0

    async def acquire(self, key: str, role: Role | None) -> None:
        """Return once the caller may execute one more; raise `TooManyExpensive` when
        its queue is full."""
        limit = self.options.limit(role)
        caller = self._callers.setdefault(key, _Caller())
        if caller.running < limit and not caller.waiting:
            caller.running += 1
            return
        if len(caller.waiting) >= self.options.queue:
            self.refused += 1
            self._forget_if_idle(key, caller)
            raise TooManyExpensive(limit, self.options.queue)
        turn = asyncio.get_running_loop().create_future()
        caller.waiting.append(turn)
        self.waited += 1
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                # Handed the slot just as it was cancelled: pass it on.
                self.release(key)
            else:
                caller.waiting.remove(turn)
                self._forget_if_idle(key, caller)
            raise

    def release(self, key: str) -> None:
        caller = self._callers[key]
        while caller.waiting:
            turn = caller.waiting.popleft()
            if not turn.done():
                # The slot passes to the next in line: `running` stays as it is.
                turn.set_result(None)
                return
        caller.running -= 1
        self._forget_if_idle(key, caller)

    def _forget_if_idle(self, key: str, caller: _Caller) -> None:
        if caller.running == 0 and not caller.waiting:
            self._callers.pop(key, None)


def caller_key(principal: Principal, address: str | None) -> str:
    """A signed-in caller by its user (all its keys and sessions), else its address."""
    if principal.user_id is not None:
        return f"user:{principal.user_id}"
    return f"address:{address or 'unknown'}"


# Operations one caller may have open over WebSockets at once, over all its
# connections: a browser's tabs, each with its live views, fit many times over.
DEFAULT_OPEN_OPERATIONS_PER_CALLER = 256


class OpenOperations:
    """The operations each caller has open over WebSockets: subscriptions above all,
    which live as long as their client wants, so their number is bounded by no rate
    limit (each is charged once, as it starts). Without this a caller could open 100
    per connection (Strawberry's bound) on as many connections as it liked."""

    __slots__ = ("_open", "limit")

    def __init__(self, limit: int = DEFAULT_OPEN_OPERATIONS_PER_CALLER) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def start(self, key: str) -> GraphQLError | None:
        """Counts one more for `key`, or the error that refuses it."""
        count = self._open.get(key, 0)
        if count >= self.limit:
            return GraphQLError(
                f"This caller has {count} operations open over WebSockets, the most it may"
                " (POLYGRAPH_MAX_SUBSCRIPTIONS_PER_CALLER). Complete one first.",
                extensions={
                    "code": ErrorCode.RATE_LIMITED.value,
                    "limit": "POLYGRAPH_MAX_SUBSCRIPTIONS_PER_CALLER",
                    "maximum": self.limit,
                },
            )
        self._open[key] = count + 1
        return None

    def end(self, key: str) -> None:
        count = self._open.pop(key) - 1
        if count:
            self._open[key] = count


class ExpensiveOperationGate(SchemaExtension):
    """Pass a factory (`functools.partial(ExpensiveOperationGate, gate=...)`)."""

    def __init__(self, *, gate: ExpensiveOperations) -> None:
        super().__init__()
        self._gate = gate

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        cost = getattr(context, "cost", None)
        if (
            not isinstance(context, RequestContext)
            or cost is None
            or not self._gate.applies_to(cost.requested)
            or execution.operation_type is OperationType.SUBSCRIPTION
            # Refused already (rate limits): nothing will run.
            or execution.result is not None
        ):
            yield
            return
        client = context.connection.client
        key = caller_key(context.principal, client.host if client else None)
        try:
            await self._gate.acquire(key, context.principal.role)
        except TooManyExpensive as refusal:
            execution.result = ExecutionResult(data=None, errors=[refusal.error()])
            yield
            return
        try:
            yield
        finally:
            self._gate.release(key)
