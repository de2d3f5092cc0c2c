"""One place that turns exceptions into GraphQL errors with `extensions.code`.

Client errors and store outages keep their message; anything else is logged with
its traceback and masked, so internals never reach the client, but the request id
in the masked message finds the log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError
from starlette.responses import Response
from strawberry.extensions import SchemaExtension
from strawberry.relay import GlobalIDValueError

from resolvers.errors import ClientError, ErrorCode
from stores import Conflict, InvalidInput, NotFound, StoreUnavailable

if TYPE_CHECKING:
    from resolvers.context import RequestContext

logger = logging.getLogger("polygraph.errors")


def classify(error: GraphQLError, request_id: str) -> GraphQLError:
    original = error.original_error
    if original is None:
        # Syntax and validation errors: the client sent a document we cannot run.
        return _with_code(error, ErrorCode.BAD_USER_INPUT)
    if isinstance(original, GlobalIDValueError):
        return _with_code(error, ErrorCode.BAD_USER_INPUT)
    if isinstance(original, ClientError):
        extra = {"field": original.field} if original.field else {}
        return _with_code(error, original.code, **extra)
    if isinstance(original, StoreUnavailable):
        return _with_code(error, ErrorCode.STORE_UNAVAILABLE, store=original.store)
    if isinstance(original, InvalidInput):
        return _with_code(error, ErrorCode.BAD_USER_INPUT, field=original.field)
    if isinstance(original, NotFound):
        return _with_code(error, ErrorCode.NOT_FOUND)
    if isinstance(original, Conflict):
        return _with_code(error, ErrorCode.CONFLICT)
    logger.error(
        "unexpected error in %s (request %s)",
        ".".join(map(str, error.path or [])),
        request_id,
        exc_info=original,
    )
    return GraphQLError(
        f"Internal error. Quote request id {request_id} when reporting it.",
        nodes=error.nodes,
        path=error.path,
        extensions={"code": ErrorCode.INTERNAL.value, "requestId": request_id},
    )


def _with_code(error: GraphQLError, code: ErrorCode, **extra: object) -> GraphQLError:
    extensions = dict(error.extensions or {})
    extensions.setdefault("code", code.value)
    extensions.update(extra)
    error.extensions = extensions
    return error


class ErrorCodes(SchemaExtension):
    """Gives every error in a result a code, masking the unexpected ones."""

    def on_operation(self) -> Iterator[None]:
        yield
        self._classify(self.execution_context.result)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Subscriptions (and other streamed operations) bypass on_operation's result.
        self._classify(result)
        yield

    def _classify(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if not errors:
            return
        context: RequestContext | None = self.execution_context.context
        request_id = getattr(context, "request_id", "-")
        result.errors = [classify(error, request_id) for error in errors]


def error_response(code: ErrorCode, message: str, status_code: int) -> Response:
    """An HTTP error outside GraphQL execution (authentication, ingest), GraphQL-shaped
    so that clients handle it like any other GraphQL error."""
    body = {"errors": [{"message": message, "extensions": {"code": code.value}}]}
    return Response(orjson.dumps(body), status_code, media_type="application/json")
