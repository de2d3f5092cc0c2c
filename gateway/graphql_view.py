"""Strawberry's ASGI view, tuned to the GraphQL-over-HTTP spec.

- Responds `application/graphql-response+json` unless the client only accepts
  `application/json`. A request that never executed has no `data` key; the status
  says what happened (`gateway.errors.response_status`).
- Every refusal is GraphQL-shaped with a code, never plain text and never a 500:
  a body that is not a JSON object (or not JSON, or not UTF-8, or nested too deep)
  gets 400, a batch 400, a POST that is not `application/json` 415, a mutation
  sent with GET 405 with `Allow: POST`.
- JSON is encoded and decoded with orjson (which refuses invalid UTF-8 and nesting
  deeper than 1,024 levels with a decode error rather than a RecursionError).
- GraphiQL (gateway/graphiql) is served from the gateway's own files.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Collection, Hashable, Mapping
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter, HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError, MissingQueryError
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData, GraphQLRequestProtocol
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.http.parse_content_type import parse_content_type
from strawberry.schema.exceptions import CannotGetOperationTypeError, InvalidOperationTypeError
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import Operation
from strawberry.subscriptions.protocols.graphql_transport_ws.types import (
    Message,
    SubscribeMessage,
)
from strawberry.types import ExecutionResult
from strawberry.types.execution import PreExecutionError
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET, UnsetType

from gateway.csrf import preflighted, refusal_message
from gateway.engine.events import freeze
from gateway.errors import error_response, response_status
from gateway.graphiql import GraphiQL
from gateway.limits import OpenOperations, RequestLimits
from gateway.limits.concurrency import caller_key
from gateway.limits.known_refusals import STATE_KEY as REFUSAL_KEY
from gateway.limits.known_refusals import KnownRefusals, request_key
from gateway.limits.refusal import Refused, document_size_refusal, response_size_refusal
from gateway.media import (
    APPLICATION_JSON,
    GRAPHQL_RESPONSE_JSON,
    REMEMBERED_HEADER_CHARS,
    negotiate_media_type,
)
from gateway.persisted_documents import read_document_id
from gateway.prepared import PreparedPath
from gateway.ws_sign_in import SignedInTransportWSHandler
from resolvers.auth import ANONYMOUS
from resolvers.context import RequestContext, Stores
from resolvers.documents import DOCUMENT_ID
from resolvers.errors import ClientError, ErrorCode
from resolvers.live import SHARED_ANSWERS, SharedAnswers
from resolvers.loaders import build_loaders
from resolvers.rate_limits import authenticate_counted
from stores.cache.lru import RememberedForShortTexts
from stores.redis.events import Subscription

logger = logging.getLogger(__name__)

_POST_OPERATIONS = frozenset(OperationType.from_http("POST"))


def _parsed_media_type(content_type: str) -> str:
    return parse_content_type(content_type)[0]


# Parsed by the email package, slowly; clients send the same few values.
_media_type = RememberedForShortTexts(
    _parsed_media_type, maxsize=64, max_chars=REMEMBERED_HEADER_CHARS
)


def _refuse_unless_json(content_type: str) -> None:
    """Operations are POSTed as JSON: anything else is 415."""
    if _media_type(content_type) != APPLICATION_JSON:
        raise HTTPException(415, f"Send operations as `Content-Type: {APPLICATION_JSON}`.")


class _TextFrameWebSocketAdapter(ASGIWebSocketAdapter):
    # graphql-transport-ws messages are text frames; `encode_json` returns bytes.
    async def send_json(self, message: Mapping[str, object]) -> None:
        encoded = orjson.dumps(message)
        if message.get("type") == "next":
            encoded = self._within_limit(encoded, message["id"])
        await self._send(encoded)

    async def send_next(self, operation_id: str, payload: bytes) -> None:
        """A `next` message around a payload encoded already (shared by subscribers)."""
        encoded = b'{"id":%b,"type":"next","payload":%b}' % (orjson.dumps(operation_id), payload)
        await self._send(self._within_limit(encoded, operation_id))

    def _within_limit(self, encoded: bytes, operation_id: object) -> bytes:
        assert isinstance(self.view, GraphQLView)
        limit = self.view.limits.max_response_bytes
        if len(encoded) <= limit:
            return encoded
        refusal = response_size_refusal(len(encoded), limit)
        payload = {"errors": [refusal.error().formatted]}
        return orjson.dumps({"id": operation_id, "type": "next", "payload": payload})

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code=code, reason=close_reason(reason))

    async def _send(self, encoded: bytes) -> None:
        try:
            await self.ws.send_text(encoded.decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


# A close frame carries at most 125 bytes, two of them the code (RFC 6455, 5.5): the
# server drops the connection without one, and without the reason, if it is longer.
_MAX_CLOSE_REASON_BYTES = 123


def close_reason(reason: str) -> str:
    """`reason` cut to fit a close frame; a reason may quote the client (a syntax
    error's token, an operation's id or name)."""
    encoded = reason.encode()
    if len(encoded) <= _MAX_CLOSE_REASON_BYTES:
        return reason
    ellipsis = "..."
    kept = encoded[: _MAX_CLOSE_REASON_BYTES - len(ellipsis)]
    return kept.decode(errors="ignore") + ellipsis


class PerOperationContext:
    """Stands in for the schema of one WebSocket: each operation on it streams with a
    context of its own, copied from the connection's (its principal, connection
    and `connection_init` payload), so that one operation's cost, loaders and outbox
    are never another's. Everything else is the schema's."""

    def __init__(self, schema: Any) -> None:
        self._schema = schema

    def __getattr__(self, name: str) -> Any:
        return getattr(self._schema, name)

    async def stream(self, query: str | None, *args: Any, **kwargs: Any) -> Any:
        shared = kwargs.get("context_value")
        if isinstance(shared, RequestContext):
            kwargs["context_value"] = operation_context(shared)
        return await self._schema.stream(query, *args, **kwargs)


def operation_context(connection: RequestContext) -> RequestContext:
    """A context for one operation on a WebSocket whose context is `connection`."""
    return dataclasses.replace(
        connection,
        cost=None,
        outbox_ids=[],
        audited=[],
        loaders=build_loaders(connection.stores),
    )


class _SharedOperation(SharedAnswers):
    """An operation whose events another subscriber's operation may answer for it."""

    __slots__ = ("handler", "operation")

    def __init__(
        self, key: Hashable, handler: _LimitedTransportWSHandler, operation: Operation[Any, Any]
    ) -> None:
        super().__init__(key)
        self.handler = handler
        self.operation = operation

    async def send(self, payload: bytes) -> None:
        if self.operation.completed:
            return
        try:
            await self.handler.websocket.send_next(self.operation.id, payload)
        except Exception as exc:
            # Its connection is going; its own task ends the operation, not the sender's.
            logger.debug("a shared answer did not reach operation %s: %r", self.operation.id, exc)


def _next_payload(result: ExecutionResult) -> dict[str, object]:
    # As Strawberry's `Operation.send_next` builds it.
    payload: dict[str, object] = {"data": result.data}
    if result.errors:
        payload["errors"] = [error.formatted for error in result.errors]
    if result.extensions:
        payload["extensions"] = result.extensions
    return payload


def _to_followers(payload: bytes) -> Callable[[Subscription], Awaitable[None]]:
    async def send(follower: Subscription) -> None:
        if isinstance(follower.tag, _SharedOperation):
            await follower.tag.send(payload)

    return send


# An operation's id is kept as long as the operation runs; clients send a counter or
# a UUID.
MAX_OPERATION_ID_CHARS = 256


def _malformed(message: object) -> str | None:
    """Why a graphql-transport-ws message cannot be handled, if it cannot: each one
    closes the socket with 4400, as the protocol asks."""
    if not isinstance(message, dict):
        return "Invalid message: send a JSON object."
    kind = message.get("type")
    if kind not in ("subscribe", "complete"):
        return None
    operation_id = message.get("id")
    if not isinstance(operation_id, str) or len(operation_id) > MAX_OPERATION_ID_CHARS:
        return (
            f"Invalid {kind} message: `id` must be a string of at most"
            f" {MAX_OPERATION_ID_CHARS} characters."
        )
    if kind == "complete":
        return None
    payload = message.get("payload")
    if not isinstance(payload, dict):
        return "Invalid subscribe message: `payload` must be an object."
    if not (
        isinstance(payload.get("query"), str)
        and isinstance(payload.get("variables"), dict | None)
        and isinstance(payload.get("operationName"), str | None)
        and isinstance(payload.get("extensions"), dict | None)
    ):
        return (
            "Invalid subscribe payload: `query` and `operationName` must be strings,"
            " `variables` and `extensions` objects."
        )
    return None


class _LimitedTransportWSHandler(SignedInTransportWSHandler):
    websocket: _TextFrameWebSocketAdapter

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The connection's context stays the one it signed in with (see ws_sign_in).
        self.schema = PerOperationContext(self.schema)  # type: ignore[assignment]

    async def handle_message(self, message: Message) -> None:
        # Strawberry reads a message's fields as its types say they are: a list, an
        # object as `id` or a string as `payload` raised, and the connection ended
        # without a close frame.
        problem = _malformed(message)
        if problem is not None:
            await self.handle_invalid_message(problem)
            return
        if message["type"] == "connection_init" and message.get("payload", {}) is None:
            # The protocol allows a null payload; Strawberry takes an object or none.
            message = {"type": "connection_init"}
        await super().handle_message(message)

    async def run_operation(self, operation: Operation[Any, Any]) -> None:
        # The operation's own task: what is set here is the operation's alone.
        key = self._shared_answers_key(operation)
        if key is not None:
            SHARED_ANSWERS.set(_SharedOperation(key, self, operation))
        await super().run_operation(operation)

    def _shared_answers_key(self, operation: Operation[Any, Any]) -> Hashable | None:
        """Operations with equal keys answer every event alike: the same document and
        variables, read with the same permissions (the executor's sharing scope, see
        gateway/engine/events.py; without one, none is shared)."""
        executor = getattr(self.schema, "execution_context_class", None)
        share_by = getattr(executor, "share_events_by", None)
        scope = share_by(self.context) if share_by is not None else None
        if scope is None:
            return None
        try:
            variables = freeze(operation.variables or {})
        except TypeError:
            return None
        return (operation.query, operation.operation_name, variables, scope)

    async def _send_result_stream(self, operation: Operation[Any, Any], result_source: Any) -> None:
        """Strawberry's, except that an answer other subscribers share (see
        `SharedAnswers`) is encoded once and sent to each of them too, by this task:
        they wait for it without running anything per event."""
        shared = SHARED_ANSWERS.get()
        is_first_result = True
        async for result in result_source:
            if is_first_result and isinstance(result, PreExecutionError):
                await self._handle_pre_execution_error(operation, result)
                return
            if not isinstance(result, ExecutionResult):
                await self._reject_incremental_delivery(operation)
                return
            is_first_result = False
            subscription = shared.subscription if shared is not None else None
            if subscription is None:
                await operation.send_next(result)
            elif result.errors:
                # Its errors name this subscriber's request: each answers the event itself.
                subscription.hand_over()
                await operation.send_next(result)
            else:
                payload = orjson.dumps(_next_payload(result))
                if not operation.completed:
                    await self.websocket.send_next(operation.id, payload)
                await subscription.answer_followers(_to_followers(payload))

    async def handle_subscribe(self, message: SubscribeMessage) -> None:
        assert isinstance(self.view, GraphQLView)
        # Its shape is checked in `handle_message` (`_malformed`).
        refusal = document_size_refusal(
            message["payload"]["query"], self.view.limits.max_document_chars
        )
        if refusal is not None and self.connection_acknowledged:
            await self.send_message(
                {"id": message["id"], "type": "error", "payload": [refusal.error().formatted]}
            )
            return
        operation_id = message["id"]
        if not self.connection_acknowledged or operation_id in self.operations:
            # Strawberry closes the connection (4401, 4409): nothing starts.
            await super().handle_subscribe(message)
            return
        open_operations = self.view.open_operations
        client = self.context.connection.client
        key = caller_key(self.context.principal, client.host if client else None)
        if (error := open_operations.start(key)) is not None:
            await self.send_message(
                {"id": operation_id, "type": "error", "payload": [error.formatted]}
            )
            return
        try:
            await super().handle_subscribe(message)
        finally:
            operation = self.operations.get(operation_id)
            if operation is not None and operation.task is not None:
                operation.task.add_done_callback(lambda _: open_operations.end(key))
            else:
                open_operations.end(key)


class GraphQLView(GraphQL[RequestContext, None]):
    websocket_adapter_class = _TextFrameWebSocketAdapter
    # Connections end with their sign-in (logout, revocation, expiry): gateway/ws_sign_in.py.
    graphql_transport_ws_handler_class = _LimitedTransportWSHandler

    def __init__(
        self,
        *args: Any,
        stores: Stores,
        limits: RequestLimits,
        csrf_required_headers: Collection[str] | None = None,
        projection_wait_s: float = 2.0,
        session_ttl_s: int = 3600,
        graphiql: GraphiQL | None = None,
        known_refusals: KnownRefusals | None = None,
        prepared: PreparedPath | None = None,
        open_operations: OpenOperations | None = None,
        **kwargs: Any,
    ) -> None:
        # graphql-transport-ws only: the older graphql-ws protocol is one more surface
        # to bound, and current clients speak the newer one.
        kwargs.setdefault("subscription_protocols", (GRAPHQL_TRANSPORT_WS_PROTOCOL,))
        kwargs["graphql_ide"] = "graphiql" if graphiql else None
        super().__init__(*args, **kwargs)
        self._graphiql = graphiql
        self._stores = stores
        self.limits = limits
        self._csrf_required_headers = csrf_required_headers
        self._projection_wait_s = projection_wait_s
        self._session_ttl_s = session_ttl_s
        self.known_refusals = known_refusals if known_refusals is not None else KnownRefusals()
        self.prepared = prepared
        self.open_operations = open_operations if open_operations is not None else OpenOperations()
        # Remembered for the few values clients send.
        self._protocol = RememberedForShortTexts(
            self._protocol_of, maxsize=64, max_chars=REMEMBERED_HEADER_CHARS
        )
        # With @defer and @stream an operation can answer in parts: Strawberry's way.
        self._one_result_per_operation = (
            not self.schema.config.enable_experimental_incremental_execution
        )

    async def get_context(
        self, request: Request | WebSocket, response: Response | WebSocket
    ) -> RequestContext:
        state = request.scope.get("state", {})
        return RequestContext(
            stores=self._stores,
            connection=request,
            request_id=state.get("request_id", "-"),
            # Set by AuthenticationMiddleware for HTTP; WebSockets sign in at connection_init.
            principal=state.get("principal", ANONYMOUS),
            loaders=build_loaders(self._stores),
            projection_wait_s=self._projection_wait_s,
            session_ttl_s=self._session_ttl_s,
            response=response if isinstance(response, Response) else None,
        )

    def should_render_graphql_ide(self, request: Any) -> bool:
        if request.method != "GET":
            # Without reading a POST's query string.
            return False
        # A GET naming a persisted document is an operation, whatever it accepts.
        params = request.query_params
        named = "extensions" in params or DOCUMENT_ID in params
        return not named and super().should_render_graphql_ide(request)

    @property
    def graphql_ide_html(self) -> str:
        assert self._graphiql is not None, "graphql_ide is set only with a GraphiQL page"
        return self._graphiql.html

    async def render_graphql_ide(self, request: Request) -> Response:
        assert self._graphiql is not None, "graphql_ide is set only with a GraphiQL page"
        return self._graphiql.page_response()

    async def on_ws_connect(self, context: RequestContext) -> UnsetType | dict[str, object] | None:
        """Authenticate a WebSocket from its `connection_init` payload.

        Browsers cannot set headers on a WebSocket, so the credentials travel as
        `{"authorization": "Bearer <token>"}` or `{"apiKey": "<key>"}`.
        """
        raw = getattr(context, "connection_params", None) or {}
        if not isinstance(raw, dict):
            raise ConnectionRejectionError({"message": "connection_init payload must be an object"})
        # Accept header spellings too (`X-Api-Key`, `Authorization`): clients copy them over.
        params = {str(key).lower(): value for key, value in raw.items()}
        authorization = params.get("authorization")
        api_key = params.get("apikey") or params.get("x-api-key")
        if not isinstance(authorization, str | None) or not isinstance(api_key, str | None):
            # Refused like a wrong credential, not ignored: the connection would go on
            # signed out.
            raise ConnectionRejectionError(
                {
                    "message": "A credential in the connection_init payload must be a string",
                    "code": ErrorCode.UNAUTHENTICATED.value,
                }
            )
        client = context.connection.client
        try:
            # Counted like AuthenticationMiddleware's: see resolvers.rate_limits.
            context.principal = await authenticate_counted(
                self._stores, authorization, api_key, client.host if client else None
            )
        except ClientError as exc:
            raise ConnectionRejectionError(
                {"message": exc.message, "code": exc.code.value}
            ) from exc
        acknowledged: UnsetType = UNSET
        return acknowledged

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        # Strawberry's, without deleting the `content-length: 0` an empty `Response`
        # sets through `MutableHeaders` (a search and a rewrite of the list): there
        # are no headers to keep.
        sub_response = Response()
        sub_response.status_code = None  # type: ignore[assignment]
        sub_response.raw_headers = []
        sub_response.media_type = negotiate_media_type(request.headers.get("accept"))
        return sub_response

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    def parse_json(self, data: str | bytes) -> Any:
        # Bodies, and the `variables` and `extensions` of a GET, are objects (an array
        # is a batch, refused further on with its own message).
        try:
            parsed = self.decode_json(data)
        except orjson.JSONDecodeError as error:
            raise HTTPException(400, _not_json(error)) from None
        if not isinstance(parsed, dict | list):
            raise HTTPException(400, 'Expected a JSON object: {"query": "...", "variables": {}}.')
        return parsed

    async def parse_http_body(self, request: AsyncHTTPRequestAdapter) -> Any:
        if request.method == "POST":
            _refuse_unless_json(request.content_type or "")
            data = self.parse_json(await request.get_body())
            if isinstance(data, list):
                # A batch: Strawberry's own checks, and its refusal.
                return await super().parse_http_body(request)
            return self._json_request_data(data, request.headers.get("accept") or "")
        if self._csrf_required_headers is not None and not preflighted(
            request.headers, self._csrf_required_headers
        ):
            raise HTTPException(400, refusal_message(self._csrf_required_headers))
        data = await super().parse_http_body(request)
        if isinstance(data, GraphQLRequestData):
            self._check_size(data)
            # A persisted document named by `documentId` (see gateway.persisted_documents).
            document_id = await read_document_id(request)
            if document_id is not None:
                data.extensions = {**(data.extensions or {}), DOCUMENT_ID: document_id}
        return data

    def _json_request_data(self, data: dict[str, Any], accept: str) -> GraphQLRequestData:
        """A JSON POST body's operation, checked as Strawberry's `parse_http_body` checks
        it, without parsing the content type again (by the email package) or looking
        for a stream transport among the headers on every request."""
        query = data.get("query")
        if not isinstance(query, str | None):
            raise HTTPException(
                400, "The GraphQL operation's `query` must be a string or null, if provided."
            )
        variables = data.get("variables")
        if not isinstance(variables, dict | None):
            raise HTTPException(
                400, "The GraphQL operation's `variables` must be an object or null, if provided."
            )
        extensions = data.get("extensions")
        if not isinstance(extensions, dict | None):
            raise HTTPException(
                400,
                "The GraphQL operation's `extensions` must be an object or null, if provided.",
            )
        request_data = GraphQLRequestData(
            query=query,
            variables=variables,
            operation_name=data.get("operationName"),
            extensions=extensions,
            protocol=self._protocol(accept),
        )
        self._check_size(request_data)
        # A persisted document named by `documentId` (see gateway.persisted_documents).
        document_id = data.get(DOCUMENT_ID)
        if document_id is not None:
            request_data.extensions = {**(extensions or {}), DOCUMENT_ID: document_id}
        return request_data

    def _check_size(self, data: GraphQLRequestData) -> None:
        refusal = document_size_refusal(data.query, self.limits.max_document_chars)
        if refusal is not None:
            raise Refused(refusal)

    def _protocol_of(self, accept: str) -> GraphQLRequestProtocol:
        """The response protocol an `Accept` value asks for: a stream, or plain HTTP."""
        transport = self._get_stream_transport_from_headers({"accept": accept})
        return transport.protocol if transport else "http"

    async def process_result(
        self, request: Request, result: ExecutionResult
    ) -> GraphQLHTTPResponse:
        processed = await super().process_result(request, result)
        # A request that never executed has no `data` at all (GraphQL spec, section 7.1):
        # every error is then a request error, located in the document but with no path.
        if result.data is None and result.errors and all(e.path is None for e in result.errors):
            processed.pop("data", None)
            key = request.scope.get("state", {}).get(REFUSAL_KEY)
            if key is not None:
                self.known_refusals.remember(key, processed)
        return processed

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or GRAPHQL_RESPONSE_JSON
        body = self.encode_json(response_data)
        if len(body) > self.limits.max_response_bytes and isinstance(response_data, dict):
            refusal = response_size_refusal(len(body), self.limits.max_response_bytes)
            # The cost report stays: the work was done.
            response_data = {
                "errors": [refusal.error().formatted],
                "extensions": response_data.get("extensions") or {},
            }
            body = self.encode_json(response_data)
        status_code, headers = (
            response_status(response_data, media_type)
            if isinstance(response_data, dict)
            else (200, {})
        )
        response = Response(
            body,
            sub_response.status_code or status_code,
            headers=headers,
            media_type=media_type,
        )
        response.raw_headers.extend(
            (k, v) for k, v in sub_response.raw_headers if k.lower() != b"content-type"
        )
        if sub_response.background:
            response.background = sub_response.background
        return response

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        payload = b""
        http = isinstance(request, Request)
        if http and request.method in ("GET", "POST"):
            # A request refused before for what it holds gets the same answer unread.
            if request.method == "POST":
                payload = await request.body()
            else:
                payload = request.scope.get("query_string", b"")
            # What a persisted document's id names can change: never remembered.
            if b"extensions" not in payload and DOCUMENT_ID.encode() not in payload:
                key = request_key(request.method, payload)
                known = self.known_refusals.get(key)
                if known is not None:
                    # Sent again after its refusal, as a flood does: held like a 429, so
                    # the sender's connections idle while the loop serves others.
                    limits = self._stores.rate_limits
                    if limits is not None and limits.enabled:
                        await limits.refusals.wait()
                    return self.create_response(known, await self.get_sub_response(request))
                request.scope.setdefault("state", {})[REFUSAL_KEY] = key
        try:
            if http and request.method == "POST" and self._one_result_per_operation:
                return await self._run_post(request, payload, context, root_value)
            return await super().run(request, context, root_value)
        except Refused as exc:
            return exc.refusal.response(400, accept=request.headers.get("accept"))
        except HTTPException as exc:
            accept = request.headers.get("accept")
            if isinstance(exc.__cause__, InvalidOperationTypeError) and request.method == "GET":
                return error_response(
                    ErrorCode.BAD_REQUEST,
                    "Mutations are only accepted over POST.",
                    405,
                    accept=accept,
                    headers={"Allow": "POST"},
                )
            return error_response(ErrorCode.BAD_REQUEST, exc.reason, exc.status_code, accept=accept)

    async def _run_post(
        self, request: Request, body: bytes, context: Any, root_value: Any
    ) -> Response:
        """Strawberry's `run` for the request nearly every client sends: one operation in
        a JSON POST, answered with one result. Batches and streamed responses (an
        `Accept` asking for multipart or server-sent events) take Strawberry's way.
        Its own way checks each result against a runtime-checkable protocol, builds a
        request adapter and passes through three more layers: about 4% of a small
        read's CPU in process (bench/profile_notes.md). A query this gateway has run
        before takes the prepared path, past Strawberry's extensions
        (gateway/prepared.py)."""
        headers = request.headers
        _refuse_unless_json(headers.get("content-type", ""))
        data = self.parse_json(body)
        if isinstance(data, list):
            return await super().run(request, context, root_value)
        request_data = self._json_request_data(data, headers.get("accept") or "")
        if request_data.protocol != "http":
            return await super().run(request, context, root_value)
        sub_response = await self.get_sub_response(request)
        if context is UNSET:
            context = await self.get_context(request, response=sub_response)
        result = None
        if (
            self.prepared is not None
            and request_data.query is not None
            and not request_data.extensions
            and root_value is UNSET
        ):
            result = await self.prepared.run(
                request_data.query, request_data.variables, request_data.operation_name, context
            )
        try:
            if result is None:
                result = await self.schema.execute(
                    request_data.query,
                    # The schema has no root value (`get_root_value` is not overridden).
                    root_value=None if root_value is UNSET else root_value,
                    variable_values=request_data.variables,
                    context_value=context,
                    operation_name=request_data.operation_name,
                    allowed_operation_types=_POST_OPERATIONS,
                    operation_extensions=request_data.extensions,
                )
        except CannotGetOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason()) from exc
        except InvalidOperationTypeError as exc:
            raise HTTPException(400, exc.as_http_error_reason("POST")) from exc
        except MissingQueryError as exc:
            raise HTTPException(400, "No GraphQL query found in the request") from exc
        response_data = await self.process_result(request, result)
        if result.errors:
            self._handle_errors(result.errors, response_data)
        return self.create_response(response_data, sub_response)


def _not_json(error: orjson.JSONDecodeError) -> str:
    """Where the JSON went wrong, as the parser says it (a position, never the text)."""
    if "depth limit" in error.msg:
        return (
            "The JSON nests arrays and objects more than 1,024 levels deep"
            f" (at character {error.pos}); send flatter values."
        )
    return f"The JSON does not parse: {error.msg} (at character {error.pos})."
