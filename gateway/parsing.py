"""Parsing with a cache, errors reported where every extension sees them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress

from graphql import GraphQLError
from strawberry.extensions import ParserCache


class ReportingParserCache(ParserCache):
    """Strawberry's `ParserCache` parses inside its hook, so a syntax error escapes the
    operation's hooks (no code is given to it) and, over a WebSocket, the operation's
    task. On an error this leaves the document unparsed: Strawberry's own parse then
    meets the same error inside the operation and reports it as a request error."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        yield
