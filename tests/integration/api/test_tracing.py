"""One request, one trace: the HTTP span under the caller's `traceparent`, the GraphQL
operation with parse, validate and execute, and each store call under execute; no
credential, document or value in any attribute."""

from __future__ import annotations

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from tests.integration.api.conftest import Caller, GraphQL, data, unique

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
QUERY = """query Crew { agents(first: 2, filter: {nameContains: "secret-literal"}) {
  edges { node { name collaborators { weight } } } } }"""


def _ancestors(span: ReadableSpan, by_id: dict[int, ReadableSpan]) -> list[str]:
    names = []
    parent = span.parent
    while parent is not None and parent.span_id in by_id:
        above = by_id[parent.span_id]
        names.append(above.name)
        parent = above.parent
    return names


def test_a_request_is_one_trace_from_http_to_the_stores(
    settings: Settings, gql: GraphQL, operator: Caller, viewer: Caller
) -> None:
    create = "mutation($n: String!) { createAgent(input: {name: $n}) { agent { id } } }"
    data(gql(create, {"n": unique("secret-literal")}, caller=operator))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with TestClient(create_app(settings, tracer_provider=provider)) as client:
        exporter.clear()  # start-up's own store calls
        response = client.post(
            "/graphql",
            json={"query": QUERY},
            headers={**viewer.headers, "traceparent": f"00-{TRACE_ID}-{CALLER_SPAN}-01"},
        )
    assert response.status_code == 200, response.text
    spans = [s for s in exporter.get_finished_spans() if s.context.trace_id == int(TRACE_ID, 16)]
    by_id = {s.context.span_id: s for s in spans}
    [server] = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.parent is not None and server.parent.span_id == int(CALLER_SPAN, 16)
    [operation] = [s for s in spans if s.name == "graphql.operation Crew"]
    assert operation.attributes == {
        "graphql.operation.name": "Crew",
        "graphql.operation.type": "query",
    }
    for step in ("graphql.parse", "graphql.validate", "graphql.execute"):
        [span] = [s for s in spans if s.name == step]
        assert _ancestors(span, by_id)[0] == "graphql.operation Crew"
    postgres = [s for s in spans if (s.attributes or {}).get("db.system") == "postgresql"]
    neo4j = [s for s in spans if s.name == "neo4j read"]
    assert postgres and neo4j
    # Checking the credential comes before GraphQL; the page's reads are under execute.
    assert any("graphql.execute" in _ancestors(s, by_id) for s in postgres)
    assert all("graphql.execute" in _ancestors(s, by_id) for s in neo4j)
    attributes = " ".join(str(v) for s in spans for v in (s.attributes or {}).values())
    assert viewer.api_key not in attributes and "secret-literal" not in attributes
    provider.shutdown()


def test_a_get_request_leaves_its_query_string_out(settings: Settings, viewer: Caller) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    document = '{ agents(filter: {nameContains: "secret-literal"}) { totalCount } }'
    with TestClient(create_app(settings, tracer_provider=provider)) as client:
        response = client.get(
            "/graphql",
            params={"query": document},
            headers={**viewer.headers, "apollo-require-preflight": "true"},
        )
    assert response.status_code == 200, response.text
    attributes = [
        (key, str(value))
        for span in exporter.get_finished_spans()
        for key, value in (span.attributes or {}).items()
    ]
    assert not [(k, v) for k, v in attributes if "secret-literal" in v]
    provider.shutdown()
