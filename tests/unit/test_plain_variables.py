"""Variables coerced on the prepared path without graphql-core's walk equal what its
`get_variable_values` makes of them, for every kind of variable the gateway's schema
takes (scalars, enums, lists of them, nullable or not); whatever that path does not
take as it is, graphql-core coerces or refuses with its own messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from graphql import GraphQLSchema, OperationDefinitionNode, parse
from graphql.execution.values import get_variable_values

from gateway.prepared import _coerced_plainly, _plain_variables
from schema import build_schema

_AGENT_ID = "QWdlbnQ6MGI5YTNjNGUtN2Y3ZS00YTUzLTlkMGUtMmQyZjNmOWU2YTEx"
_WHEN = "2026-12-07T00:00:00+00:00"

# Each kind of variable, with values graphql-core takes and values it refuses or
# changes (a single value where a list is wanted, an int for an ID or a Float).
_VALUES: dict[str, list[Any]] = {
    "ID": [_AGENT_ID, 7, None, True],
    "String": ["text", "", None, 3],
    "Boolean": [True, False, None, "yes"],
    "Int": [0, -3, 2**31, 1.0, "1", True, None],
    "Float": [0.5, 2, float("inf"), "0.5", None],
    "DateTime": [_WHEN, "yesterday", 5, None],
    "JSON": [{"key": [1, "two"]}, "text", 3, None],
    "MetricAggregate": ["AVG", "avg", "NOPE", 1, None],
}


@pytest.fixture(scope="module")
def schema() -> GraphQLSchema:
    return build_schema()._schema


def _operation(definition: str) -> OperationDefinitionNode:
    document = parse(f"query Q({definition}) {{ __typename }}")
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    return operation


def _wrapped(name: str) -> list[str]:
    return [name, f"{name}!", f"[{name}]", f"[{name}!]", f"[{name}]!", f"[{name}!]!"]


def _values(name: str, wrapped: str) -> list[Any]:
    singles = _VALUES[name]
    if not wrapped.startswith("["):
        return singles
    return [[], [v for v in singles if v is not None][:2], singles, (singles[0],), *singles]


@pytest.mark.parametrize("name", sorted(_VALUES))
def test_plain_coercion_equals_graphql_cores(schema: GraphQLSchema, name: str) -> None:
    taken = 0
    for wrapped in _wrapped(name):
        operation = _operation(f"$v: {wrapped}")
        plain = _plain_variables(schema, operation)
        assert plain is not None, wrapped
        for sent in ({}, *({"v": value} for value in _values(name, wrapped))):
            expected = get_variable_values(schema, operation.variable_definitions or (), sent)
            found = _coerced_plainly(plain, sent)
            if found is None:
                continue
            taken += 1
            assert not isinstance(expected, list), (wrapped, sent, expected)
            assert found.coerced == expected.coerced, (wrapped, sent)
            assert {k: type(v) for k, v in found.coerced.items()} == {
                k: type(v) for k, v in expected.coerced.items()
            }
            assert found.sources.keys() == expected.sources.keys()
            for key, source in found.sources.items():
                assert source.value == expected.sources[key].value
                assert str(source.signature.type) == str(expected.sources[key].signature.type)
    assert taken > 0


def test_a_list_of_ids_and_two_dates_is_taken_plainly(schema: GraphQLSchema) -> None:
    operation = _operation("$agents: [ID!]!, $from: DateTime!, $to: DateTime!")
    plain = _plain_variables(schema, operation)
    sent = {"agents": [_AGENT_ID, _AGENT_ID], "from": _WHEN, "to": _WHEN}
    found = _coerced_plainly(plain, sent)
    assert found is not None
    assert found.coerced["agents"] == [_AGENT_ID, _AGENT_ID]
    assert found.coerced["agents"] is not sent["agents"]
    assert found.coerced["from"] == datetime(2026, 12, 7, tzinfo=UTC)
    # A date graphql-core refuses: it coerces them all, and reports the error.
    assert _coerced_plainly(plain, {**sent, "to": "tomorrow"}) is None
    assert _coerced_plainly(plain, {"agents": [], "from": _WHEN}) is None


@pytest.mark.parametrize(
    "definitions",
    [
        "$input: CreateTaskInput!",
        "$ids: [[ID!]!]",
        "$first: Int = 10",
    ],
)
def test_input_objects_nested_lists_and_defaults_go_graphql_cores_way(
    schema: GraphQLSchema, definitions: str
) -> None:
    assert _plain_variables(schema, _operation(definitions)) is None
