"""OpenTelemetry traces, off unless `POLYGRAPH_TRACING=true`.

On, each HTTP request gets a server span (the ASGI instrumentation, which honours an
incoming W3C `traceparent`), its GraphQL operation a span with parse, validate and
execute under it (`GraphQLSpans`), and each store call a span beneath whichever is
current: PostgreSQL and Redis through their instrumentations, Neo4j through the
store's own (stores/graph/tracing.py). Spans carry the operation's name and type
and each statement's text, which is parameterised; never the document (its
literals may hold secrets), variables or parameter values. Spans go to an OTLP
exporter configured by the standard `OTEL_*` variables (`OTEL_EXPORTER_OTLP_ENDPOINT`,
`OTEL_SERVICE_NAME`, ...).

Why not Strawberry's OpenTelemetryExtension: it records the whole document as an
attribute, a span per resolved field (and each field's arguments), and does not
make its operation span current, so store spans would not nest under it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, Tracer
from strawberry.extensions import SchemaExtension

SERVICE_NAME = "polygraph"


def otlp_provider() -> TracerProvider:
    """Spans exported over OTLP/HTTP, configured by `OTEL_*` variables."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE_NAME}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def instrument_stores(provider: trace.TracerProvider) -> Callable[[], None]:
    """Trace asyncpg and redis calls; returns what undoes it (they patch the drivers)."""
    # The instrumentation's constructor has no annotations.
    asyncpg_instrumentor = AsyncPGInstrumentor()  # type: ignore[no-untyped-call]
    redis_instrumentor = RedisInstrumentor()
    asyncpg_instrumentor.instrument(tracer_provider=provider)
    redis_instrumentor.instrument(tracer_provider=provider)

    def undo() -> None:
        asyncpg_instrumentor.uninstrument()
        redis_instrumentor.uninstrument()

    return undo


# Attributes in which the ASGI instrumentation puts the query string.
_WITH_QUERY_STRING = ("http.url", "http.target", "url.full", "url.query")


def without_query_string(span: Span, scope: dict[str, Any]) -> None:
    """The HTTP span's hook: a GET's query string is a GraphQL document and its
    variables, so the URL attributes keep the path only."""
    recorded = getattr(span, "attributes", None) or {}
    for key in _WITH_QUERY_STRING:
        if key not in recorded:
            continue
        if key == "url.query":
            span.set_attribute(key, "")
        else:
            value = str(recorded[key])
            span.set_attribute(key, value.split("?", 1)[0])


class GraphQLSpans(SchemaExtension):
    """Pass a factory (`functools.partial(GraphQLSpans, tracer=...)`). The operation's
    span is current while it runs, so store calls nest under `graphql.execute`."""

    def __init__(self, *, tracer: Tracer) -> None:
        super().__init__()
        self._tracer = tracer

    def on_operation(self) -> Iterator[None]:
        with self._tracer.start_as_current_span("graphql.operation") as span:
            yield
            context = self.execution_context
            name = context.operation_name
            span.set_attribute("graphql.operation.name", name or "")
            with suppress(RuntimeError):  # never parsed: no type
                span.set_attribute("graphql.operation.type", context.operation_type.value)
            span.update_name(f"graphql.operation {name}" if name else "graphql.operation")

    def on_parse(self) -> Iterator[None]:
        with self._tracer.start_as_current_span("graphql.parse"):
            yield

    def on_validate(self) -> Iterator[None]:
        with self._tracer.start_as_current_span("graphql.validate"):
            yield

    def on_execute(self) -> Iterator[None]:
        with self._tracer.start_as_current_span("graphql.execute"):
            yield
