"""One place that turns exceptions into GraphQL errors with `extensions.code`, and
errors into HTTP status codes.

Client errors keep their message. Store conditions get a message without the
driver's text (hosts, ports), which goes to the log instead. Anything else is
logged with its traceback and masked, so internals never reach the client, but
the request id in the masked message finds the log line.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError, GraphQLSyntaxError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from strawberry.exceptions import MissingQueryError
from strawberry.extensions import SchemaExtension
from strawberry.relay import GlobalIDValueError
from strawberry.schema.exceptions import CannotGetOperationTypeError

from gateway.media import APPLICATION_JSON, negotiate_media_type
from resolvers.errors import ClientError, ErrorCode
from stores import (
    Conflict,
    InvalidInput,
    NotFound,
    StoreOverloaded,
    StoreTimeout,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from resolvers.context import RequestContext

logger = logging.getLogger("polygraph.errors")

# graphql-core's variable coercion errors start so.
_VARIABLE_PREFIX = "Variable '$"
# A message may quote what the client sent whole (an id that does not decode, the
# name of a field that does not exist, a string where a name belongs), up to the
# size of the body. Past this many characters only its two ends are kept, which
# name the mistake and where it is, so an error costs neither the response nor the
# log line the size of the request.
MAX_MESSAGE_CHARS = 1_024

# Statuses every HTTP client understands, whatever the media type, for a response
# without data; the first code found in this order decides.
_STATUS_BY_CODE: tuple[tuple[ErrorCode, int], ...] = (
    (ErrorCode.INTERNAL, 500),
    (ErrorCode.STORE_UNAVAILABLE, 503),
    (ErrorCode.STORE_TIMEOUT, 503),
    (ErrorCode.OVERLOADED, 503),
    (ErrorCode.SHUTTING_DOWN, 503),
    (ErrorCode.REQUEST_TIMEOUT, 504),
    (ErrorCode.RATE_LIMITED, 429),
    (ErrorCode.UNAUTHENTICATED, 401),
    (ErrorCode.FORBIDDEN, 403),
)
# An outage lasts longer than a busy moment.
RETRY_AFTER_S: Mapping[ErrorCode, int] = {
    ErrorCode.STORE_UNAVAILABLE: 5,
    ErrorCode.STORE_TIMEOUT: 1,
    ErrorCode.OVERLOADED: 1,
    ErrorCode.SHUTTING_DOWN: 1,
}


def classify(error: GraphQLError, request_id: str) -> GraphQLError:
    if (error.extensions or {}).get("code"):
        return error
    if isinstance(error, GraphQLSyntaxError):
        return _with_code(error, ErrorCode.GRAPHQL_PARSE_FAILED)
    original = error.original_error
    if original is None or (error.path is None and error.message.startswith(_VARIABLE_PREFIX)):
        # Errors graphql-core raises before resolving anything (validation errors are
        # coded in `ErrorCodes.on_validate`): a variable of the wrong type, say, whose
        # original error is whatever the scalar's parser raised.
        return _with_code(error, ErrorCode.BAD_USER_INPUT)
    if isinstance(original, CannotGetOperationTypeError):
        # Over WebSocket (over HTTP the view answers it): as HTTP words it.
        return _replaced(error, original.as_http_error_reason(), ErrorCode.BAD_REQUEST)
    if isinstance(original, MissingQueryError):
        # Likewise (an empty `query`).
        return _replaced(error, "No GraphQL query found in the request", ErrorCode.BAD_REQUEST)
    if isinstance(original, GlobalIDValueError):
        return _with_code(error, ErrorCode.BAD_USER_INPUT)
    if isinstance(original, ClientError):
        extra = {"field": original.field} if original.field else {}
        return _with_code(error, original.code, **extra)
    if isinstance(original, StoreUnavailable):
        return _store_condition(error, original, request_id)
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
    return _replaced(
        error,
        f"Internal error. Quote request id {request_id} when reporting it.",
        ErrorCode.INTERNAL,
        requestId=request_id,
    )


def store_condition(exc: StoreUnavailable) -> tuple[ErrorCode, str]:
    """The code and the client's message for a store that cannot serve now."""
    if isinstance(exc, StoreOverloaded):
        return ErrorCode.OVERLOADED, f"Every {exc.store} connection is busy; retry shortly."
    if isinstance(exc, StoreTimeout):
        return ErrorCode.STORE_TIMEOUT, f"{exc.store} did not answer in time; retry shortly."
    return ErrorCode.STORE_UNAVAILABLE, f"{exc.store} is unavailable; retry shortly."


def _store_condition(error: GraphQLError, exc: StoreUnavailable, request_id: str) -> GraphQLError:
    code, message = store_condition(exc)
    logger.warning(
        "%s in %s (request %s): %s",
        code.value,
        ".".join(map(str, error.path or [])) or "-",
        request_id,
        exc,
    )
    return _replaced(error, message, code, store=exc.store)


def _with_code(error: GraphQLError, code: ErrorCode, **extra: object) -> GraphQLError:
    extensions = dict(error.extensions or {})
    extensions.setdefault("code", code.value)
    extensions.update(extra)
    error.extensions = extensions
    return error


def _replaced(error: GraphQLError, message: str, code: ErrorCode, **extra: object) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        path=error.path,
        extensions={"code": code.value, **extra},
    )


# Logged where they are classified, with what the client does not see.
_LOGGED_WHEN_CLASSIFIED = frozenset(
    code.value
    for code in (
        ErrorCode.INTERNAL,
        ErrorCode.STORE_UNAVAILABLE,
        ErrorCode.STORE_TIMEOUT,
        ErrorCode.OVERLOADED,
    )
)


class ErrorCodes(SchemaExtension):
    """Gives every error in a result a code, masking the unexpected ones, and logs each
    once: client errors at INFO without a traceback, store conditions at WARNING,
    INTERNAL at ERROR with its traceback."""

    def __init__(self) -> None:
        super().__init__()
        self._logged: set[int] = set()

    def on_operation(self) -> Iterator[None]:
        yield
        self._classify(self.execution_context.result)

    def on_validate(self) -> Iterator[None]:
        yield
        # Listed first, this runs after every other extension's validation.
        for error in self.execution_context.pre_execution_errors or ():
            _with_code(error, ErrorCode.GRAPHQL_VALIDATION_FAILED)

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # Subscriptions (and other streamed operations) bypass on_operation's result.
        self._classify(result)
        yield

    def _classify(self, result: Any) -> None:
        errors = getattr(result, "errors", None)
        if not errors:
            return
        context: RequestContext | None = self.execution_context.context
        result.errors = classify_all(errors, getattr(context, "request_id", "-"), self._logged)


def classify_all(
    errors: list[GraphQLError], request_id: str, logged: set[int] | None = None
) -> list[GraphQLError]:
    """`errors`, each with a code (see `classify`), each logged once: `logged` holds the
    ids of those logged before (a streamed operation's last result comes twice)."""
    classified = [classify(error, request_id) for error in errors]
    for error in classified:
        error.message = shortened(error.message)
        if logged is not None:
            if id(error) in logged:
                continue
            logged.add(id(error))
        code = (error.extensions or {}).get("code")
        if code not in _LOGGED_WHEN_CLASSIFIED:
            logger.info(
                "%s in %s (request %s): %s",
                code,
                ".".join(map(str, error.path or [])) or "-",
                request_id,
                error.message,
            )
    # The errors as they came and as classified: a coded copy may drop the first.
    _forget_tracebacks([*errors, *classified])
    return classified


def shortened(message: str) -> str:
    """`message` with its middle left out if it runs past `MAX_MESSAGE_CHARS`."""
    if len(message) <= MAX_MESSAGE_CHARS:
        return message
    kept = MAX_MESSAGE_CHARS // 2
    left_out = len(message) - 2 * kept
    return f"{message[:kept]} [... {left_out:,} characters left out ...] {message[-kept:]}"


def _forget_tracebacks(errors: list[GraphQLError]) -> None:
    """Once errors are logged, their tracebacks (their own, their originals' and every
    exception chained to them) only hold the frames they passed through, and with them
    the request's executor, context and loaders: a reference cycle through the result
    that waited for a garbage collection (about 110 objects for one field error)."""
    pending: list[BaseException | None] = [*errors]
    seen: set[int] = set()
    while pending:
        exc = pending.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending += (exc.__cause__, exc.__context__, getattr(exc, "original_error", None))


def response_status(body: Mapping[str, Any], media_type: str) -> tuple[int, dict[str, str]]:
    """The HTTP status and extra headers for a GraphQL response body.

    Data, even partial: 200. No data: the first of `_STATUS_BY_CODE` found among the
    errors; otherwise 400 for a request that never executed (no `data` key) with
    `application/graphql-response+json`, and 200 as the spec asks of the legacy
    `application/json` and of an execution whose `data` is null.
    """
    errors = body.get("errors")
    if not errors or body.get("data") is not None:
        return 200, {}
    by_code: dict[object, Mapping[str, object]] = {}
    for error in errors:
        extensions = error.get("extensions") or {}
        by_code.setdefault(extensions.get("code"), extensions)
    for code, status in _STATUS_BY_CODE:
        if code.value in by_code:
            return status, _headers_for(code, by_code[code.value])
    if "data" in body or media_type == APPLICATION_JSON:
        return 200, {}
    return 400, {}


def _headers_for(code: ErrorCode, extensions: Mapping[str, object]) -> dict[str, str]:
    if code is ErrorCode.UNAUTHENTICATED:
        return {"WWW-Authenticate": "Bearer"}
    # An error that knows when to come back (RATE_LIMITED: when the bucket has room).
    retry_after = extensions.get("retryAfter")
    if isinstance(retry_after, int) and not isinstance(retry_after, bool):
        return {"Retry-After": str(retry_after)}
    if code in RETRY_AFTER_S:
        return {"Retry-After": str(RETRY_AFTER_S[code])}
    return {}


async def method_not_allowed(request: Request, exc: Exception) -> Response:
    """The router's 405: GraphQL-shaped on a GraphQL path (its `Allow` kept), as every
    other refusal there is; plain text elsewhere, as Starlette answers it."""
    assert isinstance(exc, HTTPException)
    if request.url.path not in GRAPHQL_PATHS:
        return PlainTextResponse(exc.detail, exc.status_code, headers=exc.headers)
    allowed = (exc.headers or {}).get("Allow", "")
    return error_response(
        ErrorCode.BAD_REQUEST,
        f"{request.method} is not allowed here; allowed: {allowed}.",
        exc.status_code,
        accept=request.headers.get("accept"),
        headers=exc.headers,
    )


GRAPHQL_PATHS = frozenset(("/graphql",))


def error_response(
    code: ErrorCode,
    message: str,
    status_code: int,
    *,
    accept: str | None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, object] | None = None,
) -> Response:
    """A refusal written before (or instead of) execution: GraphQL-shaped, without
    `data`, in the media type the client accepts."""
    details = {**(extensions or {}), "code": code.value}
    body = {"errors": [{"message": shortened(message), "extensions": details}]}
    merged = {**_headers_for(code, details), **(headers or {})}
    return Response(
        orjson.dumps(body),
        status_code,
        headers=merged,
        media_type=negotiate_media_type(accept),
    )
