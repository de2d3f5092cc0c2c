"""Queries and mutations slower than `POLYGRAPH_SLOW_OPERATION_S` are logged at WARNING
with their name, type, duration, estimated cost and request id, so that the expensive ones can
be found without tracing every request. Subscriptions live long by design and are
left out. Called for every operation by gateway.operation_hooks."""

from __future__ import annotations

import logging

from strawberry.types import ExecutionContext
from strawberry.types.graphql import OperationType

logger = logging.getLogger("polygraph.slow")


def report_if_slow(
    context: ExecutionContext, kind: OperationType, elapsed_s: float, threshold_s: float
) -> None:
    if elapsed_s < threshold_s or kind is OperationType.SUBSCRIPTION:
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
