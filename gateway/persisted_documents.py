"""Puts the document a request names in place of its text before it is parsed
(automatic persisted queries, trusted documents: see `resolvers.documents`).

GET works as POST does: Apollo clients send persisted queries over GET, with
`extensions` and `variables` as JSON in the query string. `documentId` travels at
the top level of the request (`read_document_id`), where Strawberry does not look;
the view carries it in the operation's extensions.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import orjson
from cross_web import AsyncHTTPRequestAdapter
from graphql import ExecutionResult, GraphQLError, GraphQLSyntaxError, parse
from strawberry.extensions import SchemaExtension
from strawberry.types import ExecutionContext

from gateway.limits.extension import shape_refusal
from gateway.limits.options import RequestLimits
from gateway.limits.refusal import document_size_refusal
from gateway.limits.shape import measure
from resolvers.context import RequestContext
from resolvers.documents import DOCUMENT_ID, PersistedDocumentError, registration_cost
from resolvers.errors import ClientError, ErrorCode
from resolvers.manifests import Manifest
from stores.errors import StoreError

_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]*")


class PersistedQueries(SchemaExtension):
    """APQ registrations happen once the operation has run: a document that fails to
    parse, validate or pass a request limit is never kept. Each costs its caller
    `registration_cost` points besides the operation's; a caller without them left
    has its operation run but not kept (as while Redis is away)."""

    def __init__(self) -> None:
        super().__init__()
        self._register_as: str | None = None

    async def on_operation(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        documents = context.stores.documents if isinstance(context, RequestContext) else None
        if documents is not None:
            try:
                resolved = await documents.resolve(execution.query, execution.operation_extensions)
            except (ClientError, StoreError) as exc:
                _refuse(execution, exc)
                if isinstance(exc, PersistedDocumentError) and context.response is not None:
                    if exc.status is not None:
                        context.response.status_code = exc.status
                    for name, value in exc.headers:
                        context.response.headers[name] = value
            else:
                execution.query = resolved.text
                self._register_as = resolved.register_as
        yield

    async def on_execute(self) -> AsyncIterator[None]:
        yield
        execution = self.execution_context
        context = execution.context
        query = execution.query
        if self._register_as is None or query is None or not isinstance(context, RequestContext):
            return
        documents = context.stores.documents
        if documents is None or _refused(execution.result):
            return
        limits = context.stores.rate_limits
        if limits is not None and limits.enabled:
            client = context.connection.client
            outcome = await limits.charge(
                context.principal, client.host if client else None, cost=registration_cost(query)
            )
            if not outcome.allowed:
                return
        await documents.register(self._register_as, query)


def _refused(result: object) -> bool:
    """Whether a rate limit refused the operation (it did not run)."""
    for error in getattr(result, "errors", None) or ():
        original = getattr(error, "original_error", None)
        if isinstance(original, ClientError) and original.code is ErrorCode.RATE_LIMITED:
            return True
    return False


def _refuse(execution: ExecutionContext, exc: Exception) -> None:
    """End the operation with `exc` as its error, nothing executed.

    Strawberry insists on a document to parse, with the operation the request names:
    a stand-in `__typename` query takes the place of the missing one, and a preset
    result the place of its execution. Streams (WebSockets) go the same way, since a
    query runs as one result there.
    """
    name = execution.operation_name
    execution.query = (
        f"query {name} {{ __typename }}" if name and _NAME.fullmatch(name) else "{ __typename }"
    )
    error = GraphQLError(str(exc), original_error=exc)
    execution.result = ExecutionResult(data=None, errors=[error])


async def read_document_id(request: AsyncHTTPRequestAdapter) -> object | None:
    """The request's top-level `documentId`, if it has one (any JSON value: checked later)."""
    if request.method == "GET":
        return request.query_params.get(DOCUMENT_ID)
    body = await request.get_body()
    if DOCUMENT_ID.encode() not in body:
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    return data.get(DOCUMENT_ID) if isinstance(data, dict) else None


def limit_problems(manifest: Manifest, limits: RequestLimits) -> list[str]:
    """What would refuse each document at every request, found when it is pushed: its
    size, its tokens and its shape (cost depends on each request's variables)."""
    problems: list[str] = []
    for document in manifest.documents:
        refusal = document_size_refusal(document.body, limits.max_document_chars)
        if refusal is None:
            try:
                parsed = parse(document.body, max_tokens=limits.max_tokens)
            except GraphQLSyntaxError as exc:
                # Validation against the schema reports syntax errors; this, the tokens.
                problems.append(f"{document.id}: {exc.message}")
                continue
            refusal = shape_refusal(measure(parsed), limits)
        if refusal is not None:
            problems.append(f"{document.id}: {refusal.message}")
    return problems
