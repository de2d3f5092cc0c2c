"""A field whose arguments mix literals and variables (`metricSeries(names: ["cpu"],
agents: $agents)`) has its literals coerced once per plan and its variables' values
taken per request; the resolver gets what graphql-core's `get_argument_values` gives
it, whatever is left out, null, defaulted or refused."""

from __future__ import annotations

from enum import Enum
from typing import Any

import pytest
import strawberry
from graphql import parse

from gateway.engine import planned_execution_context
from gateway.engine.plan import split_arguments
from tests.support.executors import assert_same_answer


@strawberry.enum
class Shade(Enum):
    LIGHT = "light"
    DARK = "dark"


@strawberry.type
class Query:
    @strawberry.field
    def echo(
        self,
        count: int,
        names: list[str] | None = None,
        note: str | None = None,
        shade: Shade = Shade.DARK,
        limit: int = 3,
    ) -> str:
        return repr((count, names, note, shade, limit))


STOCK = strawberry.Schema(query=Query)
PLANNED = strawberry.Schema(query=Query, execution_context_class=planned_execution_context())
ECHO = STOCK._schema.query_type.fields["echo"]  # type: ignore[union-attr]

DOCUMENTS = [
    # Literals beside variables: split.
    'query($c: Int!, $n: String) { echo(count: $c, names: ["a", "b"], note: $n, shade: LIGHT) }',
    # A nullable argument's variable, left out or null; a defaulted one's left out.
    "query($c: Int!, $n: String, $l: Int) { echo(count: $c, note: $n, limit: $l) }",
    # A variable inside a literal: the whole field per request.
    'query($c: Int!, $a: String!) { echo(count: $c, names: [$a, "b"]) }',
    # A variable with a default of its own.
    "query($c: Int! = 7, $s: Shade = LIGHT) { echo(count: $c, shade: $s) }",
]
VARIABLES: list[dict[str, Any]] = [
    {"c": 1, "n": "x", "a": "y", "l": 5},
    {"c": 2},
    {"c": 3, "n": None, "l": None, "s": None},
    {},
    # Null for a non-null argument: an error, the same on both.
    {"c": None, "a": "y"},
]


@pytest.mark.parametrize("document", DOCUMENTS)
@pytest.mark.parametrize("variables", VARIABLES)
async def test_the_resolver_gets_what_graphql_core_gives(
    document: str, variables: dict[str, Any]
) -> None:
    expected = await STOCK.execute(document, variable_values=variables)
    answered = await PLANNED.execute(document, variable_values=variables)
    assert_same_answer(answered, expected)


def _field(document: str) -> Any:
    return parse(document).definitions[0].selection_set.selections[0]  # type: ignore[attr-defined]


def test_literals_are_coerced_once_and_variables_named() -> None:
    node = _field(DOCUMENTS[0])
    split = split_arguments(ECHO, node)
    assert split == (
        ("count", "c", True),
        ("names", ["a", "b"], None),
        ("note", "n", False),
        ("shade", Shade.LIGHT, None),
        ("limit", 3, None),
    )


def test_a_variable_inside_a_literal_is_not_split() -> None:
    assert split_arguments(ECHO, _field(DOCUMENTS[2])) is None
