"""Spans for Neo4j calls, when the gateway traces (gateway/tracing.py): the driver has
no OpenTelemetry instrumentation of its own. No tracer set: no span, no cost."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

from opentelemetry.trace import Span, SpanKind, Tracer

_tracer: Tracer | None = None


def set_tracer(tracer: Tracer | None) -> None:
    global _tracer
    _tracer = tracer


def span(operation: str, statement: str) -> AbstractContextManager[Span | None]:
    """A client span for one call; the statement is parameterised: no values in it."""
    if _tracer is None:
        return nullcontext()
    return _tracer.start_as_current_span(
        f"neo4j {operation}",
        kind=SpanKind.CLIENT,
        attributes={"db.system": "neo4j", "db.operation": operation, "db.statement": statement},
    )
