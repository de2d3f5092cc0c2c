"""Queries and mutations slower than `POLYGRAPH_SLOW_OPERATION_S` are logged at WARNING
with their name, type, duration, estimated cost and request id, so that the expensive ones can
be found without tracing every request. Subscriptions live long by design and are
left out."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension
from strawberry.types.graphql import OperationType

logger = logging.getLogger("polygraph.slow")


class SlowOperations(SchemaExtension):
    """Pass a factory (`functools.partial(SlowOperations, threshold_s=...)`)."""

    def __init__(self, *, threshold_s: float) -> None:
        super().__init__()
        self._threshold_s = threshold_s

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        elapsed_s = time.perf_counter() - started
        if elapsed_s < self._threshold_s:
            return
        context = self.execution_context
        try:
            kind = context.operation_type
        except RuntimeError:  # never parsed: nothing ran that could be slow
            return
        if kind is OperationType.SUBSCRIPTION:
            return
        cost = getattr(context.context, "cost", None)
        logger.warning(
            "slow %s %s: %.0f ms, estimated cost %s, request %s",
            kind.value,
            context.operation_name or "(anonymous)",
            elapsed_s * 1000,
            getattr(cost, "requested", None),
            getattr(context.context, "request_id", "-"),
        )
