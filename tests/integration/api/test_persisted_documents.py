"""Automatic persisted queries (Apollo's protocol) and trusted documents, over POST,
GET and WebSockets; trusted-documents mode runs nothing else."""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from resolvers.documents import sha256_hex
from stores import Conflict, PostgresStore
from tests.integration.api.conftest import Caller, GraphQL, data, error_codes, parse_round_trips


def _document(label: str) -> str:
    """A distinct, valid document: its hash has never been seen by Redis."""
    return f"query Probe {{ __typename {label}_{secrets.token_hex(4)}: __typename }}"


def _apq(sha256: str) -> dict[str, Any]:
    return {"persistedQuery": {"version": 1, "sha256Hash": sha256}}


def _post(
    client: TestClient, body: dict[str, Any], caller: Caller | None = None
) -> httpx2.Response:
    return client.post("/graphql", json=body, headers=caller.headers if caller else {})


def test_apq_miss_register_and_hit(gql: GraphQL, viewer: Caller) -> None:
    client, document = gql.client, _document("apq")
    sha256 = sha256_hex(document)

    miss = _post(client, {"extensions": _apq(sha256)}, viewer)
    # Exactly what Apollo clients look for, with 200: after a 400 they give up on APQ.
    assert miss.status_code == 200
    assert miss.json()["errors"] == [
        {"message": "PersistedQueryNotFound", "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND"}}
    ]
    assert miss.headers["cache-control"] == "private, no-cache, must-revalidate"

    registered = _post(client, {"query": document, "extensions": _apq(sha256)}, viewer)
    assert registered.status_code == 200 and data(registered.json())["__typename"] == "Query"

    hit = _post(client, {"extensions": _apq(sha256), "operationName": "Probe"}, viewer)
    assert hit.status_code == 200
    assert hit.json() == registered.json()
    # Known to this process now: the hit's only Redis call is its rate limit charge
    # (the request's and the operation's points together); registering added the
    # registration's charge and the write.
    assert parse_round_trips(hit.headers["x-round-trips"])["redis"] == 1
    assert parse_round_trips(registered.headers["x-round-trips"])["redis"] == 3


def test_apq_registrations_are_shared_through_redis(settings: Settings, viewer: Caller) -> None:
    document = _document("shared")
    sha256 = sha256_hex(document)
    with (
        TestClient(create_app(_quiet(settings))) as one,
        TestClient(create_app(_quiet(settings))) as two,
    ):
        _post(one, {"query": document, "extensions": _apq(sha256)}, viewer)
        hit = _post(two, {"extensions": _apq(sha256)}, viewer)
        assert data(hit.json())["__typename"] == "Query"


def test_apq_over_get_as_apollo_sends_it(gql: GraphQL, viewer: Caller) -> None:
    client, document = gql.client, _document("get")
    sha256 = sha256_hex(document)
    params = {"extensions": json.dumps(_apq(sha256)), "operationName": "Probe"}
    # Browsers accept */*: still an operation, not GraphiQL. Apollo's clients send the
    # preflight header that CSRF prevention asks of a GET.
    headers = {**viewer.headers, "accept": "*/*", "apollo-require-preflight": "true"}
    miss = client.get("/graphql", params=params, headers=headers)
    assert miss.status_code == 200
    assert miss.json()["errors"][0]["message"] == "PersistedQueryNotFound"
    registered = client.get("/graphql", params={**params, "query": document}, headers=headers)
    assert data(registered.json())["__typename"] == "Query"
    hit = client.get("/graphql", params=params, headers=headers)
    assert data(hit.json())["__typename"] == "Query"


def test_apq_refuses_a_hash_that_is_not_the_documents(gql: GraphQL, viewer: Caller) -> None:
    document = _document("mismatch")
    wrong = sha256_hex(document + " ")
    body = _post(gql.client, {"query": document, "extensions": _apq(wrong)}, viewer).json()
    assert body["errors"][0]["message"] == "provided sha does not match query"
    assert error_codes(body) == ["PERSISTED_QUERY_HASH_MISMATCH"]
    # Nothing was registered under the wrong hash.
    assert error_codes(_post(gql.client, {"extensions": _apq(wrong)}, viewer).json()) == [
        "PERSISTED_QUERY_NOT_FOUND"
    ]
    for bad in ({"version": 2, "sha256Hash": wrong}, {"version": 1, "sha256Hash": "xyz"}, "v1"):
        refused = _post(gql.client, {"extensions": {"persistedQuery": bad}}, viewer)
        assert error_codes(refused.json()) == ["BAD_USER_INPUT"], bad


def test_apq_keeps_no_document_over_the_size_limit(settings: Settings, viewer: Caller) -> None:
    small = _quiet(settings, persisted_document_max_bytes=256)
    document = _document("large") + " " * 300
    sha256 = sha256_hex(document)
    with TestClient(create_app(small)) as client:
        ran = _post(client, {"query": document, "extensions": _apq(sha256)}, viewer)
        assert data(ran.json())["__typename"] == "Query"
        again = _post(client, {"extensions": _apq(sha256)}, viewer)
        assert error_codes(again.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_apq_keeps_no_document_a_request_limit_refused(gql: GraphQL, viewer: Caller) -> None:
    aliases = " ".join(f"a{i}: __typename" for i in range(40))
    document = f"query Probe {{ {aliases} x_{secrets.token_hex(4)}: __typename }}"
    sha256 = sha256_hex(document)
    refused = _post(gql.client, {"query": document, "extensions": _apq(sha256)}, viewer)
    assert error_codes(refused.json()) == ["QUERY_TOO_COMPLEX"]
    again = _post(gql.client, {"extensions": _apq(sha256)}, viewer)
    assert error_codes(again.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_apq_registrations_are_charged_by_size(settings: Settings) -> None:
    # Anonymous callers from addresses of their own, 24 points an hour each: a 10 KiB
    # document costs 1 + 10, a 30 KiB one 1 + 30 (more than is left).
    limited = _quiet(
        settings,
        rate_limit_anonymous=24,
        rate_limit_window_s=3600,
        # The operation alone (1 point), not the request's own points (nor its body's) too.
        rate_limit_request=0,
        rate_limit_body_bytes_per_point=0,
        persisted_document_max_bytes=65_536,
    )
    for kib, kept in ((10, True), (30, False)):
        document = _document("sized") + " " * (kib * 1024 - 100)
        sha256 = sha256_hex(document)
        # A /64 of the documentation range no other test (or run, within the hour) uses.
        address = f"2001:db8:{secrets.token_hex(2)}:{secrets.token_hex(2)}::1"
        with TestClient(create_app(limited), client=(address, 50000)) as client:
            ran = _post(client, {"query": document, "extensions": _apq(sha256)})
            assert data(ran.json())["__typename"] == "Query"
            again = _post(client, {"extensions": _apq(sha256)})
            if kept:
                assert data(again.json())["__typename"] == "Query"
            else:
                assert error_codes(again.json()) == ["PERSISTED_QUERY_NOT_FOUND"]


def test_apq_can_be_turned_off(settings: Settings, viewer: Caller) -> None:
    with TestClient(create_app(_quiet(settings, apq_enabled=False))) as client:
        refused = _post(client, {"extensions": _apq(sha256_hex(_document("off")))}, viewer)
        assert refused.status_code == 200
        assert refused.json()["errors"][0]["message"] == "PersistedQueryNotSupported"
        assert error_codes(refused.json()) == ["PERSISTED_QUERY_NOT_SUPPORTED"]


def _quiet(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(
        update={"projector_enabled": False, "embedding_filler_enabled": False, **update}
    )


def _register(settings: Settings, documents: dict[str, str], client_name: str = "test") -> int:
    async def run() -> int:
        async with PostgresStore(settings.postgres_options()) as postgres:
            return await postgres.documents.register(
                [(i, sha256_hex(body), body) for i, body in documents.items()],
                client_name=client_name,
            )

    return asyncio.run(run())


@contextmanager
def trusted_gateway(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(_quiet(settings, trusted_documents_only=True))) as client:
        yield client


def test_trusted_documents_run_by_id_by_hash_and_by_text(
    settings: Settings, gql: GraphQL, viewer: Caller
) -> None:
    document = _document("trusted")
    sha256 = sha256_hex(document)
    relay_id = hashlib.md5(document.encode()).hexdigest()
    _register(settings, {relay_id: document})
    expected = data(_post(gql.client, {"query": document}, viewer).json())
    with trusted_gateway(settings) as client:
        by_id = _post(client, {"documentId": relay_id, "operationName": "Probe"}, viewer)
        assert data(by_id.json()) == expected
        by_sha = _post(client, {"documentId": f"sha256:{sha256}"}, viewer)
        assert data(by_sha.json()) == expected
        by_apq = _post(client, {"extensions": _apq(sha256)}, viewer)
        assert data(by_apq.json()) == expected
        by_text = _post(client, {"query": document}, viewer)
        assert data(by_text.json()) == expected
        preflighted = {**viewer.headers, "apollo-require-preflight": "true"}
        by_get = client.get("/graphql", params={"documentId": relay_id}, headers=preflighted)
        assert data(by_get.json()) == expected
    # Outside trusted-documents mode, registered documents run by id too.
    assert data(_post(gql.client, {"documentId": relay_id}, viewer).json()) == expected


def test_trusted_mode_runs_nothing_else(settings: Settings, viewer: Caller) -> None:
    unregistered = _document("stranger")
    with trusted_gateway(settings) as client:
        as_text = _post(client, {"query": unregistered}, viewer)
        assert error_codes(as_text.json()) == ["PERSISTED_QUERY_NOT_IN_LIST"]
        # Refused before execution: no `data` at all.
        assert "data" not in as_text.json()
        # APQ registration would let anyone add documents: not in this mode.
        sha256 = sha256_hex(unregistered)
        registering = _post(client, {"query": unregistered, "extensions": _apq(sha256)}, viewer)
        assert error_codes(registering.json()) == ["PERSISTED_QUERY_NOT_IN_LIST"]
        assert error_codes(_post(client, {"extensions": _apq(sha256)}, viewer).json()) == [
            "PERSISTED_QUERY_NOT_IN_LIST"
        ]
        unknown = _post(client, {"documentId": "no-such-document"}, viewer)
        assert error_codes(unknown.json()) == ["PERSISTED_QUERY_NOT_IN_LIST"]
        both = _post(client, {"documentId": "x", "query": unregistered}, viewer)
        assert error_codes(both.json()) == ["BAD_USER_INPUT"]
        # Over a WebSocket too (graphql-transport-ws carries text only).
        with client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws:
            ws.send_text(
                json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}})
            )
            assert json.loads(ws.receive_text())["type"] == "connection_ack"
            subscription = "subscription { healthUpdates(intervalSeconds: 1) { status } }"
            ws.send_text(
                json.dumps({"id": "1", "type": "subscribe", "payload": {"query": subscription}})
            )
            reply = json.loads(ws.receive_text())
            errors = reply["payload"] if reply["type"] == "error" else reply["payload"]["errors"]
            assert errors[0]["extensions"]["code"] == "PERSISTED_QUERY_NOT_IN_LIST"


def test_a_trusted_subscription_runs_over_a_websocket(settings: Settings, viewer: Caller) -> None:
    subscription = "subscription Health { healthUpdates(intervalSeconds: 1) { status } }"
    _register(settings, {sha256_hex(subscription): subscription})
    with (
        trusted_gateway(settings) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as ws,
    ):
        ws.send_text(json.dumps({"type": "connection_init", "payload": {"apiKey": viewer.api_key}}))
        assert json.loads(ws.receive_text())["type"] == "connection_ack"
        ws.send_text(
            json.dumps({"id": "1", "type": "subscribe", "payload": {"query": subscription}})
        )
        reply = json.loads(ws.receive_text())
        assert reply["type"] == "next" and reply["payload"]["data"]["healthUpdates"]["status"]


def test_an_id_keeps_its_document(settings: Settings) -> None:
    first, second = _document("one"), _document("two")
    document_id = f"custom-{secrets.token_hex(4)}"
    assert _register(settings, {document_id: first}) == 1
    assert _register(settings, {document_id: first}) == 0
    with pytest.raises(Conflict, match="registered with another body"):
        _register(settings, {document_id: second, f"{document_id}-b": second})

    async def count() -> int:
        async with PostgresStore(settings.postgres_options()) as postgres:
            found = await postgres.documents.by_id(f"{document_id}-b")
            return 0 if found is None else 1

    # All or nothing: the other document of the refused push was not kept.
    assert asyncio.run(count()) == 0
