"""Whole query results for operations marked `@cached(ttl: N)` (stores.cache.queries).

Keyed by the normalised document, the operation's name, its variables and the
caller's permission scope (user, role, API-key scopes, bound agent): a result is only
ever served to a caller whose every permission check would have come out the same,
because the checks' inputs are in the key, and a check that reads a store (a grant)
makes the result one that is not kept. Only queries carry the directive (the schema
declares it `on QUERY`); a result with errors, one that read anything no change
notice covers, or one larger than `POLYGRAPH_CACHE_QUERY_MAX_BYTES` is not kept.
`extensions.cache` answers `{status: HIT | MISS | BYPASS, ...}`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
from graphql import (
    DirectiveNode,
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    IntValueNode,
    VariableNode,
    get_operation_ast,
    print_ast,
)
from strawberry.extensions import SchemaExtension

from resolvers.auth import Principal
from resolvers.context import RequestContext
from resolvers.errors import ErrorCode
from stores.cache import reads
from stores.cache.queries import Lookup, QueryResultCache, key_of

_NORMALISED: dict[str, bytes] = {}
_NORMALISED_KEPT = 256


def _normalised(query: str, document: DocumentNode) -> bytes:
    """The document as graphql-core prints it: spacing, commas and comments aside."""
    printed = _NORMALISED.get(query)
    if printed is None:
        if len(_NORMALISED) >= _NORMALISED_KEPT:
            _NORMALISED.pop(next(iter(_NORMALISED)))
        printed = _NORMALISED[query] = print_ast(document).encode()
    return printed


def _ttl_asked(node: DirectiveNode, variables: dict[str, Any]) -> int | None:
    # Validation has checked the argument is an Int or an Int variable.
    for argument in node.arguments or ():
        if argument.name.value != "ttl":
            continue
        value = argument.value
        if isinstance(value, VariableNode):
            given = variables.get(value.name.value)
            return given if isinstance(given, int) else None
        if isinstance(value, IntValueNode):
            return int(value.value)
    return None


def _scope(principal: Principal) -> bytes:
    return orjson.dumps(
        [
            str(principal.user_id or ""),
            principal.role.value if principal.role else "",
            str(principal.agent_id or ""),
            sorted(principal.scopes),
        ]
    )


class QueryResultCaching(SchemaExtension):
    """After rate limiting (a hit is charged like any request) and before execution."""

    def __init__(self) -> None:
        super().__init__()
        self._outcome: dict[str, Any] | None = None

    async def on_execute(self) -> AsyncIterator[None]:
        execution = self.execution_context
        context = execution.context
        cache = context.stores.entity_cache if isinstance(context, RequestContext) else None
        document = execution.graphql_document
        operation = (
            get_operation_ast(document, execution.operation_name)
            if cache is not None and document is not None
            else None
        )
        marks = (operation.directives or ()) if operation is not None else ()
        node = next((d for d in marks if d.name.value == "cached"), None)
        if cache is None or operation is None or node is None or document is None:
            yield
            return
        assert isinstance(context, RequestContext)
        queries = cache.queries
        asked = _ttl_asked(node, execution.variables or {})
        if asked is not None and asked < 1:
            execution.result = ExecutionResult(
                data=None,
                errors=[
                    GraphQLError(
                        "@cached(ttl:) must be at least 1 second",
                        nodes=[node],
                        extensions={"code": ErrorCode.BAD_USER_INPUT.value},
                    )
                ],
            )
            yield
            return
        ttl_s = queries.options.query_ttl_s
        if asked is not None:
            ttl_s = min(float(asked), ttl_s)
        if not queries.usable:
            self._outcome = {"status": "BYPASS", "reason": "not following changes"}
            yield
            return
        key = key_of(
            _normalised(execution.query or "", document),
            (execution.operation_name or "").encode(),
            orjson.dumps(execution.variables or {}, option=orjson.OPT_SORT_KEYS),
            _scope(context.principal),
        )
        lookup = await queries.lookup(key, ttl_s)
        body = lookup.body
        level = lookup.level
        running: asyncio.Future[bytes | None] | None = None
        if body is None:
            running = queries.begin(key)
            if running is not None:
                # One computation per key at a time: wait for the one under way.
                body = await asyncio.shield(running)
                level = "local"
        if body is not None:
            execution.result = ExecutionResult(data=orjson.loads(body))
            self._outcome = {"status": "HIT", "level": level, "ttl": ttl_s}
            yield
            return
        stored: bytes | None = None
        try:
            with reads.watching() as log:
                yield
            stored = await self._keep(queries, key, lookup, log, ttl_s)
        finally:
            if running is None:
                queries.end(key, stored)

    async def _keep(
        self,
        queries: QueryResultCache,
        key: str,
        lookup: Lookup,
        log: reads.ReadLog,
        ttl_s: float,
    ) -> bytes | None:
        result = self.execution_context.result
        reason = None
        if not isinstance(result, ExecutionResult) or result.data is None or result.errors:
            reason = "errors"
        elif log.uncached:
            reason = "read what no change notice covers"
        if reason is None:
            assert isinstance(result, ExecutionResult)
            try:
                body = orjson.dumps(result.data)
            except TypeError:
                reason = "not encodable"
            else:
                if await queries.store(key, body, log.kinds, lookup, ttl_s):
                    self._outcome = {"status": "MISS", "stored": True, "ttl": ttl_s}
                    return body
                reason = "too large"
        self._outcome = {"status": "MISS", "stored": False, "reason": reason}
        return None

    def get_results(self) -> dict[str, Any]:
        return {"cache": self._outcome} if self._outcome is not None else {}
