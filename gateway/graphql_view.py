"""Strawberry's ASGI view, tuned to the GraphQL-over-HTTP spec.

- Responds `application/graphql-response+json` unless the client only accepts
  `application/json`; with that media type a request that never executed (no
  `data`) gets 400, as the spec asks.
- A mutation sent with GET gets 405 with `Allow: POST` (Strawberry says 400).
- JSON is encoded with orjson.
- GraphiQL (gateway/graphiql) is served from the gateway's own files.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
from cross_web import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect
from strawberry.asgi import ASGIWebSocketAdapter, GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.extensions import SchemaExtension
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.exceptions import WebSocketDisconnected
from strawberry.schema.exceptions import InvalidOperationTypeError
from strawberry.types.unset import UNSET, UnsetType

from gateway.graphiql import GraphiQL
from gateway.ws_sign_in import SignedInLegacyWSHandler, SignedInTransportWSHandler
from resolvers.auth import ANONYMOUS, authenticate
from resolvers.context import RequestContext, Stores
from resolvers.errors import ClientError
from resolvers.loaders import build_loaders

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"


def negotiate_media_type(accept: str | None) -> str:
    """Pick the response media type from the Accept header (spec section 6.4.1)."""
    if not accept:
        return GRAPHQL_RESPONSE_JSON
    accepted = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if GRAPHQL_RESPONSE_JSON in accepted or "*/*" in accepted or "application/*" in accepted:
        return GRAPHQL_RESPONSE_JSON
    if APPLICATION_JSON in accepted:
        return APPLICATION_JSON
    return GRAPHQL_RESPONSE_JSON


class ReleaseLoaders(SchemaExtension):
    """Frees an operation's loaders, and every record they fetched, when it ends (see
    `Loaders.clear`): fewer objects for the garbage collector to walk under load."""

    def on_operation(self) -> Iterator[None]:
        yield
        context = self.execution_context.context
        if isinstance(context, RequestContext):
            context.loaders.clear()


class _TextFrameWebSocketAdapter(ASGIWebSocketAdapter):
    # graphql-transport-ws messages are text frames; `encode_json` returns bytes.
    async def send_json(self, message: Mapping[str, object]) -> None:
        try:
            await self.ws.send_text(orjson.dumps(message).decode())
        except WebSocketDisconnect as exc:
            raise WebSocketDisconnected from exc


class GraphQLView(GraphQL[RequestContext, None]):
    websocket_adapter_class = _TextFrameWebSocketAdapter
    # Connections end with their sign-in (logout, revocation, expiry): gateway/ws_sign_in.py.
    graphql_transport_ws_handler_class = SignedInTransportWSHandler
    graphql_ws_handler_class = SignedInLegacyWSHandler

    def __init__(
        self,
        *args: Any,
        stores: Stores,
        projection_wait_s: float = 2.0,
        session_ttl_s: int = 3600,
        graphiql: GraphiQL | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["graphql_ide"] = "graphiql" if graphiql else None
        super().__init__(*args, **kwargs)
        self._graphiql = graphiql
        self._stores = stores
        self._projection_wait_s = projection_wait_s
        self._session_ttl_s = session_ttl_s

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
        )

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
        try:
            context.principal = await authenticate(
                self._stores,
                authorization if isinstance(authorization, str) else None,
                api_key if isinstance(api_key, str) else None,
            )
        except ClientError as exc:
            raise ConnectionRejectionError(
                {"message": exc.message, "code": exc.code.value}
            ) from exc
        acknowledged: UnsetType = UNSET
        return acknowledged

    async def get_sub_response(self, request: Request | WebSocket) -> Response:
        sub_response = await super().get_sub_response(request)
        sub_response.media_type = negotiate_media_type(request.headers.get("accept"))
        return sub_response

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def create_response(
        self,
        response_data: GraphQLHTTPResponse | list[GraphQLHTTPResponse],
        sub_response: Response,
    ) -> Response:
        media_type = sub_response.media_type or GRAPHQL_RESPONSE_JSON
        status_code = sub_response.status_code or 200
        if (
            media_type == GRAPHQL_RESPONSE_JSON
            and isinstance(response_data, dict)
            and response_data.get("data") is None
            and response_data.get("errors")
        ):
            status_code = 400
        response = Response(self.encode_json(response_data), status_code, media_type=media_type)
        response.headers.raw.extend(
            (k, v) for k, v in sub_response.headers.raw if k.lower() != b"content-type"
        )
        if sub_response.background:
            response.background = sub_response.background
        return response

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        try:
            return await super().run(request, context, root_value)
        except HTTPException as exc:
            if isinstance(exc.__cause__, InvalidOperationTypeError) and request.method == "GET":
                return PlainTextResponse(
                    "Mutations are only accepted over POST.", 405, headers={"Allow": "POST"}
                )
            raise
