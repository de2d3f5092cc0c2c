"""Parsing with a cache, errors reported where every extension sees them, and what a
parsed document weighs in the caches that keep it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, parse
from graphql.language import Node
from strawberry.extensions import SchemaExtension

from stores.cache.lru import Lru

# Tokens of the documents one cache keeps, in all. A parsed document keeps every token
# of its text alive (each node's location holds the chain), about 600 bytes a token:
# a 2,000-token document (POLYGRAPH_MAX_TOKENS) weighs 1.2 MB, so caches bounded by
# entries alone (a thousand plans) could be made to hold a gigabyte or more. The
# standard introspection query is 190 tokens, most operations far fewer.
CACHED_TOKENS = 100_000
# Documents kept parsed, at most (Strawberry's `ParserCache` keeps 128).
PARSED_DOCUMENTS = 128


def document_tokens(node: Node) -> int:
    """Tokens of the whole document `node` was parsed from, comments included: what
    keeping `node` keeps alive. 1 for a node without a location."""
    location = node.loc
    if location is None:
        return 1
    token = location.start_token
    while token.prev is not None:
        token = token.prev
    count = 0
    walked: Any = token
    while walked is not None:
        count += 1
        walked = walked.next
    return count


class ParsedDocuments(Lru[tuple[str, tuple[tuple[str, Any], ...]], DocumentNode]):
    """Documents by text and parse options, bounded in entries and in tokens
    (`CACHED_TOKENS`). One per app, shared by its requests."""

    __slots__ = ()

    def __init__(self, maxsize: int = PARSED_DOCUMENTS, max_tokens: int = CACHED_TOKENS) -> None:
        super().__init__(maxsize, max_tokens)


class ReportingParserCache(SchemaExtension):
    """Parses through `documents`. Strawberry's `ParserCache` parses inside its hook,
    so a syntax error escapes the operation's hooks (no code is given to it) and, over
    a WebSocket, the operation's task; and it keeps 128 documents whatever their size.
    On an error this leaves the document unparsed: Strawberry's own parse then meets
    the same error inside the operation and reports it as a request error. Pass a
    factory (`functools.partial(ReportingParserCache, documents=...)`)."""

    def __init__(self, *, documents: ParsedDocuments) -> None:
        super().__init__()
        self._documents = documents

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        query = context.query
        if query is not None:
            options = context.parse_options
            key = (query, tuple(sorted(options.items())))
            document = self._documents.get(key)
            if document is None:
                try:
                    document = parse(query, **options)
                except GraphQLError:
                    document = None
                else:
                    self._documents.put(key, document, document_tokens(document))
            if document is not None:
                context.graphql_document = document
        yield
