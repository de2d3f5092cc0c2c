"""What every operation gets around it, in one schema extension rather than one each
(Strawberry builds every extension and walks its hooks on every request):

- its name in the request's log fields, once it is known (gateway.logs);
- Prometheus's count, latency and error codes (gateway.prometheus);
- a WARNING if it was slow (gateway.slow_operations);
- its loaders let go when it ends, and every record they fetched with them (see
  `Loaders.clear`): fewer objects for the garbage collector to walk under load.

Listed before `ErrorCodes`, so it leaves after it and sees every error's code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

from gateway.logs import name_operation
from gateway.prometheus import GatewayMetrics
from gateway.slow_operations import report_if_slow
from resolvers.context import RequestContext


class OperationHooks(SchemaExtension):
    """Pass a factory: `functools.partial(OperationHooks, slow_s=..., metrics=...)`."""

    def __init__(self, *, slow_s: float, metrics: GatewayMetrics | None = None) -> None:
        super().__init__()
        self._slow_s = slow_s
        self._metrics = metrics

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        elapsed_s = time.perf_counter() - started
        execution = self.execution_context
        kind: OperationType | None
        try:
            kind = execution.operation_type
        except Exception:  # a document that did not parse has no operation type
            kind = None
        errors = getattr(execution.result, "errors", None) or ()
        operation_finished(
            execution.context,
            execution.operation_name,
            kind,
            elapsed_s,
            errors,
            slow_s=self._slow_s,
            metrics=self._metrics,
        )

    def on_execute(self) -> Iterator[None]:
        name_operation(self.execution_context.operation_name)
        yield


def operation_finished(
    context: object,
    name: str | None,
    kind: OperationType | None,
    elapsed_s: float,
    errors: Iterable[GraphQLError],
    *,
    slow_s: float,
    metrics: GatewayMetrics | None,
) -> None:
    """What ends every operation, whichever way it ran (gateway/prepared.py)."""
    if isinstance(context, RequestContext):
        context.loaders.clear()
        sinks = context.stores.event_sinks
        if sinks is not None and (context.outbox_ids or context.audited):
            # Its events go within the delivery's poll, a claim's too (claims send no
            # NOTIFY for the outbox listener to hear).
            sinks.wake()
    if metrics is not None:
        metrics.record_operation(name, kind.value if kind else "unknown", elapsed_s, errors)
    if kind is not None:
        report_if_slow(context, name, kind, elapsed_s, slow_s)
