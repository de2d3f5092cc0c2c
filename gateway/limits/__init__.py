"""Bounds on what one request may cost, checked before anything executes."""

from gateway.limits.concurrency import (
    ExpensiveOperationGate,
    ExpensiveOperations,
    OpenOperations,
)
from gateway.limits.extension import ParseLimiter, PlanCache, RequestLimiter
from gateway.limits.options import RequestLimits

__all__ = [
    "ExpensiveOperationGate",
    "ExpensiveOperations",
    "OpenOperations",
    "ParseLimiter",
    "PlanCache",
    "RequestLimiter",
    "RequestLimits",
]
