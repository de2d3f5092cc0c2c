"""Types answered from plain rows and store records must keep the shape that allows it."""

from __future__ import annotations

import inspect
import re

import pytest
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    GraphQLObjectType,
    OperationDefinitionNode,
    parse,
)

from gateway.engine.plan import basic_attribute
from resolvers.loaders import SettledLoader
from schema import agents, build_schema, tasks
from schema.rows import NO_COLUMN_FIELDS, ColumnField
from schema.selection import names_below
from stores.metrics.records import BucketValue
from stores.postgres.agents import _COLUMNS as AGENT_ROW
from stores.postgres.task_events import ROW as TASK_ROW


def _object_type(name: str) -> GraphQLObjectType:
    graphql_type = build_schema()._schema.type_map[name]
    assert isinstance(graphql_type, GraphQLObjectType)
    return graphql_type


def test_metric_buckets_can_be_the_stores_bucket_values() -> None:
    bucket = _object_type("MetricBucket")
    # No type check and only attribute reads: a `BucketValue` answers as a MetricBucket.
    assert bucket.is_type_of is None
    attributes = {basic_attribute(field) for field in bucket.fields.values()}
    assert attributes == set(BucketValue._fields)


@pytest.mark.parametrize(
    ("type_name", "fields", "row"),
    [("Task", tasks.COLUMN_FIELDS, TASK_ROW), ("Agent", agents.COLUMN_FIELDS, AGENT_ROW)],
)
def test_row_fields_are_plain_columns(
    type_name: str, fields: dict[str, ColumnField], row: str
) -> None:
    graphql_type = _object_type(type_name)
    columns = set(row.replace(",", " ").split())
    for name, field in fields.items():
        assert basic_attribute(graphql_type.fields[name]) == field.attribute, name
        assert field.column in columns, name
    assert {*graphql_type.fields, "__typename"} >= NO_COLUMN_FIELDS


async def test_a_settled_loader_answers_only_loads_that_succeeded() -> None:
    calls: list[list[int]] = []

    async def batch(keys: list[int]) -> list[int]:
        calls.append(keys)
        if len(calls) == 1:
            raise ValueError("the store is down")
        return [key * 10 for key in keys]

    loader: SettledLoader[int, int] = SettledLoader(batch)
    assert loader.settled(1) is None
    with pytest.raises(ValueError, match="down"):
        await loader.load_many([1, 2])
    # A failed load is not an answer: the child loads again and reports its own error.
    assert loader.settled(1) is None
    assert await loader.load(1) == 10
    assert loader.settled(1) == 10
    assert loader.settled(2) is None
    assert calls == [[1, 2], [1]]


def test_names_below_follow_fragments_at_the_path() -> None:
    document = parse(
        """{ agents { edges { node { t: tasks(first: 2) { edges { node { title ...F
             ... on Task { priority } } } } } } } }
           fragment F on Task { status }"""
    )
    fragments = {
        definition.name.value: definition
        for definition in document.definitions
        if isinstance(definition, FragmentDefinitionNode)
    }
    operation = document.definitions[0]
    assert isinstance(operation, OperationDefinitionNode)
    tasks_field = _first_field(_first_field(_first_field(_first_field(operation))))
    assert tasks_field.name.value == "tasks"
    names = names_below([tasks_field], fragments, "edges", "node")
    assert names == {"title", "status", "priority"}


def _first_field(parent: OperationDefinitionNode | FieldNode) -> FieldNode:
    assert parent.selection_set is not None
    field = parent.selection_set.selections[0]
    assert isinstance(field, FieldNode)
    return field


def test_record_id_fields_read_nothing_of_the_record_but_its_id() -> None:
    definition = agents.Agent.__strawberry_definition__  # type: ignore[attr-defined]
    by_name = {field.graphql_name or field.python_name: field for field in definition.fields}
    for name in agents.RECORD_ID_FIELDS:
        resolver = by_name[name].base_resolver
        assert resolver is not None, name
        source = inspect.getsource(resolver.wrapped_func)
        reads = re.findall(r"\brecord\b(\.\w+)?", source)
        assert reads, name
        assert set(reads) == {".id"}, (name, reads)
        assert name not in agents.COLUMN_FIELDS
