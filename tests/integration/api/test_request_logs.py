"""Every record of a request carries its id, trace id, principal and operation; the
access line adds status and duration; no credential is ever written."""

from __future__ import annotations

import io
import json
import logging
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.logs import make_handler
from gateway.settings import Settings
from tests.integration.api.conftest import Caller
from tests.support.serving import serve_in_thread, wait_until

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


@contextmanager
def _json_log() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    access = logging.getLogger("polygraph.access")
    level = access.level
    root.addHandler(handler)
    access.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        access.setLevel(level)


def test_the_access_line_names_request_trace_principal_and_operation(
    client: TestClient, viewer: Caller
) -> None:
    query = "query Roster { agents(first: 2) { edges { node { name } } } }"
    with _json_log() as log:
        response = client.post(
            "/graphql",
            json={"query": query},
            headers={**viewer.headers, "traceparent": TRACEPARENT},
        )
    assert response.status_code == 200
    records = [json.loads(line) for line in log.getvalue().splitlines()]
    [access] = [r for r in records if r["logger"] == "polygraph.access"]
    assert access["request_id"] == response.headers["x-request-id"]
    assert access["trace_id"] == TRACE_ID
    assert access["principal_id"] == viewer.user_id
    assert access["operation"] == "Roster"
    assert access["status"] == 200 and access["duration_ms"] >= 0
    assert access["message"].startswith("POST /graphql 200 ")
    assert viewer.api_key not in log.getvalue()


def test_a_malformed_traceparent_is_not_taken(client: TestClient) -> None:
    with _json_log() as log:
        client.get("/health/live", headers={"traceparent": "not-a-trace"})
    [access] = [json.loads(line) for line in log.getvalue().splitlines()]
    assert (access["trace_id"], access["principal_id"], access["operation"]) == ("-", "-", "-")


def test_a_client_gone_before_its_body_arrived_is_logged_as_499_without_a_traceback(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="polygraph.access")
    with serve_in_thread(create_app(settings)) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as sock:
            # The headers promise 100 bytes; the client leaves after 9.
            sock.sendall(
                b"POST /graphql HTTP/1.1\r\nHost: gateway\r\n"
                b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
                b'{"query":'
            )

        def access_statuses() -> list[object]:
            return [
                getattr(r, "status", None) for r in caplog.records if r.name == "polygraph.access"
            ]

        wait_until(lambda: bool(access_statuses()), what="the request's access line")
    assert access_statuses() == [499]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
