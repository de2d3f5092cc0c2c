"""Types answered from plain rows and store records must keep the shape that allows it."""

from __future__ import annotations

import dataclasses

import pytest
from graphql import GraphQLObjectType

from gateway.engine.plan import basic_attribute
from schema import agents, build_schema, tasks
from schema.rows import NO_COLUMN_FIELDS, ColumnField
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
    assert attributes == {field.name for field in dataclasses.fields(BucketValue)}


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
