"""A request refused before execution for what it holds (a parse or validation error,
a request limit) gets the same answer when sent again, without being parsed again;
anything that depends on who asks, or on what a persisted document names, is
answered anew."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

from starlette.testclient import TestClient

from gateway.graphql_view import GraphQLView
from gateway.limits.known_refusals import KnownRefusals, request_only
from resolvers.context import Stores
from tests.integration.api.conftest import Caller, error_codes

PREFLIGHT = {"apollo-require-preflight": "true"}


def _known(client: TestClient) -> KnownRefusals:
    app: Any = client.app
    for route in app.routes:
        view = getattr(route, "endpoint", None)
        if getattr(route, "path", None) == "/graphql" and isinstance(view, GraphQLView):
            return view.known_refusals
    raise AssertionError("no GraphQL view at /graphql")


def _stores(client: TestClient) -> Stores:
    app: Any = client.app
    stores: Stores = app.state.stores
    return stores


def test_a_refused_document_is_answered_again_from_memory(
    client: TestClient, viewer: Caller
) -> None:
    known = _known(client)
    answered = known.answered
    lane = _stores(client).rate_limits
    assert lane is not None
    held = lane.refusals.held
    # Other tests of this gateway send these documents too: a comment makes them new.
    fresh = f"# {uuid4()}\n"
    for query, code in (
        (fresh + "{ viewer {", "GRAPHQL_PARSE_FAILED"),
        (fresh + "{ noSuchField }", "GRAPHQL_VALIDATION_FAILED"),
        (fresh + "{ " + " ".join(f"a{i}: __typename" for i in range(40)) + " }",
         "QUERY_TOO_COMPLEX"),
    ):  # fmt: skip
        first = client.post("/graphql", json={"query": query}, headers=viewer.headers)
        again = client.post("/graphql", json={"query": query}, headers=viewer.headers)
        assert error_codes(first.json()) == [code]
        assert (again.status_code, again.json()) == (first.status_code, first.json())
        assert again.headers["content-type"] == first.headers["content-type"]
        # Still charged, and told so.
        assert "ratelimit" in again.headers
    assert known.answered == answered + 3
    # Each repeat was held like a 429 before it was answered (other tests may add more).
    assert lane.refusals.held >= held + 3


def test_a_remembered_refusal_keeps_the_status_of_the_media_type_asked_for(
    client: TestClient,
) -> None:
    body = {"query": "{ noSuchField }"}
    assert client.post("/graphql", json=body).status_code == 400
    answered = _known(client).answered
    legacy = client.post("/graphql", json=body, headers={"accept": "application/json"})
    assert _known(client).answered == answered + 1
    assert legacy.status_code == 200
    assert legacy.headers["content-type"].startswith("application/json")
    assert error_codes(legacy.json()) == ["GRAPHQL_VALIDATION_FAILED"]


def test_only_the_same_request_gets_the_remembered_refusal(
    client: TestClient, viewer: Caller
) -> None:
    query = "query Tasks($n: Int!) { agents(first: $n) { totalCount } }"
    over = client.post(
        "/graphql", json={"query": query, "variables": {"n": 100_000}}, headers=viewer.headers
    )
    assert error_codes(over.json()) == ["BAD_USER_INPUT"]
    # The same document with other variables runs.
    fine = client.post(
        "/graphql", json={"query": query, "variables": {"n": 1}}, headers=viewer.headers
    )
    assert fine.status_code == 200 and "errors" not in fine.json()
    # A GET of a document refused over POST is a request of its own (a mutation over
    # GET, for one, is refused for its method first).
    answered = _known(client).answered
    get = client.get(
        "/graphql", params={"query": "{ noSuchField }"}, headers={**PREFLIGHT, **viewer.headers}
    )
    assert error_codes(get.json()) == ["GRAPHQL_VALIDATION_FAILED"]
    assert _known(client).answered == answered


def test_persisted_document_requests_are_never_remembered(client: TestClient) -> None:
    known = _known(client)
    before = len(known)
    body = {
        "query": "{ noSuchField }",
        "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "0" * 64}},
    }
    for _ in range(2):
        client.post("/graphql", json=body)
    assert len(known) == before


def test_refusals_that_depend_on_the_caller_or_the_moment_are_not_remembered() -> None:
    def refusal(code: str) -> dict[str, Any]:
        return {"errors": [{"message": "no", "extensions": {"code": code}}]}

    assert request_only(refusal("GRAPHQL_PARSE_FAILED"))
    for code in ("RATE_LIMITED", "UNAUTHENTICATED", "FORBIDDEN", "STORE_UNAVAILABLE"):
        assert not request_only(refusal(code))
    # Executed, even without data: not a refusal of the request.
    assert not request_only({"data": None, **refusal("GRAPHQL_PARSE_FAILED")})
    # A response with extensions carries this request's own (its cost, say).
    assert not request_only({**refusal("QUERY_TOO_COMPLEX"), "extensions": {"cost": {}}})
    # Kept in memory by the thousand: long messages are not.
    long = {"errors": [{"message": "x" * 4097, "extensions": {"code": "GRAPHQL_PARSE_FAILED"}}]}
    assert not request_only(long)


def test_a_refusal_quoting_a_long_literal_is_not_remembered(
    client: TestClient, viewer: Caller
) -> None:
    known = _known(client)
    before, answered = len(known), known.answered
    # graphql-core quotes the literal back, indented: 20 kB from a 335-character query,
    # each message cut to its two ends (gateway.errors.MAX_MESSAGE_CHARS), five of them.
    deep = "[" * 150 + "1" + "]" * 150
    fields = " ".join(f"a{n}: agents(first: {deep}) {{ totalCount }}" for n in range(5))
    query = f"# {uuid4()}\n{{ {fields} }}"
    for _ in range(2):
        response = client.post("/graphql", json={"query": query}, headers=viewer.headers)
        assert error_codes(response.json()) == ["GRAPHQL_VALIDATION_FAILED"] * 5
        assert len(response.content) > 4096
    assert (len(known), known.answered) == (before, answered)
