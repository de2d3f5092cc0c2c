"""Logs GraphQL operations slower than a threshold, with their name and cost, so that
an operator can find what to look at without logging every request."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from strawberry.extensions import SchemaExtension

logger = logging.getLogger("polygraph.slow")

# Operation names come from clients: a log line carries a bounded piece of one.
_NAME_LIMIT = 64


class SlowOperations(SchemaExtension):
    def __init__(self, *, threshold_s: float) -> None:
        self._threshold_s = threshold_s

    def on_operation(self) -> Iterator[None]:
        started = time.perf_counter()
        yield
        elapsed = time.perf_counter() - started
        if elapsed < self._threshold_s:
            return
        context = self.execution_context
        name = (context.operation_name or "anonymous")[:_NAME_LIMIT]
        cost = getattr(context.context, "cost", None)
        request_id = getattr(context.context, "request_id", "?")
        logger.warning(
            "slow GraphQL operation %s (%.3f s, request %s): cost %s requested, %s actual",
            name,
            elapsed,
            request_id,
            cost.requested if cost is not None else "?",
            cost.actual if cost is not None and cost.actual is not None else "?",
        )
