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
from collections.abc import Iterator

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
        context = execution.context
        if isinstance(context, RequestContext):
            context.loaders.clear()
        kind: OperationType | None
        try:
            kind = execution.operation_type
        except Exception:  # a document that did not parse has no operation type
            kind = None
        if self._metrics is not None:
            errors = getattr(execution.result, "errors", None) or ()
            self._metrics.record_operation(
                execution.operation_name, kind.value if kind else "unknown", elapsed_s, errors
            )
        if kind is not None:
            report_if_slow(execution, kind, elapsed_s, self._slow_s)

    def on_execute(self) -> Iterator[None]:
        name_operation(self.execution_context.operation_name)
        yield
