"""What the caches that keep parsed documents hold: bounded in tokens as well as in
entries, since a document keeps every token of its text alive."""

from __future__ import annotations

from functools import partial

import strawberry
from graphql import parse

from gateway.parsing import ParsedDocuments, ReportingParserCache, document_tokens


@strawberry.type
class Query:
    @strawberry.field
    def a(self) -> int:
        return 1


def test_a_documents_tokens_are_counted_from_any_of_its_nodes() -> None:
    document = parse("{ a a } # note")
    # <SOF> { a a } <COMMENT> <EOF>
    assert document_tokens(document) == 7
    (operation,) = document.definitions
    assert document_tokens(operation) == 7
    assert document_tokens(parse("{ a }", no_location=True)) == 1


async def test_parsed_documents_are_kept_within_their_tokens() -> None:
    documents = ParsedDocuments(maxsize=100, max_tokens=20)
    schema = strawberry.Schema(
        query=Query, extensions=[partial(ReportingParserCache, documents=documents)]
    )
    for spaces in range(5):
        # 8 tokens each: <SOF> { a a a a } <EOF>
        result = await schema.execute("{ a a a a }" + " " * spaces)
        assert result.errors is None
    assert len(documents) == 2
    assert documents.weight == 16
    # Heavier than the budget: answered, but not kept.
    heavy = "{ " + "a " * 30 + "}"
    assert (await schema.execute(heavy)).errors is None
    assert len(documents) == 2
    # A syntax error is reported by the operation, and nothing is kept for it.
    broken = await schema.execute("{ a ")
    assert broken.errors
    assert len(documents) == 2
