"""Queries and mutations slower than `POLYGRAPH_SLOW_OPERATION_S` are logged at WARNING
with their name, type, duration, estimated cost and request id, so that the expensive ones can
be found without tracing every request. Subscriptions live long by design and are
left out. Called for every operation by gateway.operation_hooks."""

from __future__ import annotations

import logging

from strawberry.types.graphql import OperationType

logger = logging.getLogger("polygraph.slow")


def report_if_slow(
    context: object,
    operation_name: str | None,
    kind: OperationType,
    elapsed_s: float,
    threshold_s: float,
) -> None:
    """`context` is the request's (`RequestContext`, or a test's own)."""
    if elapsed_s < threshold_s or kind is OperationType.SUBSCRIPTION:
        return
    cost = getattr(context, "cost", None)
    logger.warning(
        "slow %s %s: %.0f ms, estimated cost %s, request %s",
        kind.value,
        operation_name or "(anonymous)",
        elapsed_s * 1000,
        getattr(cost, "requested", None),
        getattr(context, "request_id", "-"),
    )
