"""The differential harness compares executors, not stores: a run in which a store
failed is not compared, any other difference is recorded."""

from __future__ import annotations

import asyncpg
from graphql import GraphQLError
from graphql.execution.types import ExecutionResult

from resolvers.errors import ClientError, ErrorCode
from stores import StoreUnavailable
from tests.support.differential import _store_failed


def _failed_with(error: Exception) -> ExecutionResult:
    return ExecutionResult(None, [GraphQLError(str(error), original_error=error)])


def test_store_failures_make_a_run_inconclusive() -> None:
    assert _store_failed(_failed_with(asyncpg.QueryCanceledError("statement timeout")))
    assert _store_failed(_failed_with(StoreUnavailable("postgres", "connection refused")))


def test_request_errors_are_compared() -> None:
    assert not _store_failed(_failed_with(ClientError(ErrorCode.FORBIDDEN, "no")))
    assert not _store_failed(_failed_with(ValueError("bad")))
    assert not _store_failed(ExecutionResult({"a": 1}, None))
