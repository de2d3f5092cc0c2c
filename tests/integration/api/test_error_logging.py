"""Expected client errors are logged at INFO without a traceback; only INTERNAL
errors get one (issue 12, item 12)."""

from __future__ import annotations

import gc
import logging
from uuid import uuid4

import pytest
import strawberry
from starlette.testclient import TestClient

from gateway.errors import ErrorCodes
from resolvers.errors import ClientError, ErrorCode
from schema.build import QuietSchema
from tests.integration.api.conftest import Caller
from tests.support.executors import recording_executor

CLIENT_ERRORS = [
    # A bad cursor, with and without credentials.
    ('{ agents(after: "not-a-cursor") { totalCount } }', True, "BAD_USER_INPUT"),
    ("{ agents { totalCount } }", False, "UNAUTHENTICATED"),
    ("{ noSuchField }", True, "GRAPHQL_VALIDATION_FAILED"),
    ("{ viewer {", True, "GRAPHQL_PARSE_FAILED"),
    ("{ agents(first: 101) { totalCount } }", True, "BAD_USER_INPUT"),
]


@pytest.mark.parametrize(("query", "signed_in", "code"), CLIENT_ERRORS)
def test_client_errors_are_logged_at_info_without_a_traceback(
    client: TestClient,
    viewer: Caller,
    caplog: pytest.LogCaptureFixture,
    query: str,
    signed_in: bool,
    code: str,
) -> None:
    caplog.set_level(logging.DEBUG)
    headers = viewer.headers if signed_in else {}
    # New to the gateway: a refusal it remembers is answered again without a log line.
    fresh = f"# {uuid4()}\n{query}"
    body = client.post("/graphql", json={"query": fresh}, headers=headers).json()
    assert body["errors"][0]["extensions"]["code"] == code
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    logged = [r for r in caplog.records if r.name == "polygraph.errors"]
    assert [r.levelno for r in logged] == [logging.INFO]
    assert code in logged[0].getMessage()


@strawberry.type
class _Query:
    @strawberry.field
    def broken(self) -> int:
        raise RuntimeError("a defect")

    @strawberry.field
    def refused(self) -> int:
        raise ClientError(ErrorCode.FORBIDDEN, "not for you")


async def test_only_internal_errors_are_logged_with_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    schema = QuietSchema(query=_Query, extensions=[ErrorCodes])
    result = await schema.execute("{ broken }")
    assert result.errors is not None
    assert result.errors[0].extensions == {"code": "INTERNAL", "requestId": "-"}
    (record,) = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None

    caplog.clear()
    await schema.execute("{ refused }")
    (record,) = caplog.records
    assert (record.levelno, record.exc_info) == (logging.INFO, None)


async def test_a_request_with_errors_leaves_nothing_for_the_garbage_collector() -> None:
    # An error's traceback holds the frames it passed through, and they the executor
    # that held the error: dropped once logged, the request is freed when it returns.
    recorded, made = recording_executor()
    schema = QuietSchema(query=_Query, extensions=[ErrorCodes], execution_context_class=recorded)
    gc.disable()
    try:
        result = await schema.execute("{ refused }")
        assert result.errors is not None
        assert result.errors[0].extensions == {"code": "FORBIDDEN"}
        assert made
        assert all(executor() is None for executor in made)
    finally:
        gc.enable()
