"""Types answered from plain rows and store records must keep the shape that allows it."""

from __future__ import annotations

import dataclasses

from graphql import GraphQLObjectType

from gateway.engine.plan import basic_attribute
from schema import build_schema
from schema.tasks import _COLUMN_FIELDS, _NO_COLUMN_FIELDS
from stores.metrics.records import BucketValue
from stores.postgres.task_events import ROW


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


def test_task_row_fields_are_plain_columns_of_task() -> None:
    task = _object_type("Task")
    columns = set(ROW.split(", "))
    for name, (attribute, column, _) in _COLUMN_FIELDS.items():
        assert basic_attribute(task.fields[name]) == attribute, name
        assert column in columns, name
    assert {*task.fields, "__typename"} >= _NO_COLUMN_FIELDS
