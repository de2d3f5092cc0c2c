"""Leaf serializers answer exactly as graphql-core's completion with Strawberry's
scalars does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import strawberry
from graphql import GraphQLScalarType

from gateway.engine import leaves
from gateway.engine.leaves import serializer


@strawberry.type
class _Query:
    at: datetime


def _datetime_type() -> GraphQLScalarType:
    found = strawberry.Schema(_Query)._schema.type_map["DateTime"]
    assert isinstance(found, GraphQLScalarType)
    return found


def test_datetimes_are_written_as_strawberry_writes_them() -> None:
    datetime_type = _datetime_type()
    serialize = serializer(datetime_type)
    utc = datetime(2026, 12, 4, 10, 5, 0, 120, tzinfo=UTC)
    # Equal to `utc`, and so hashing alike, but written with its own offset.
    elsewhere = utc.astimezone(timezone(timedelta(hours=1)))
    naive = datetime(2026, 12, 4, 10, 5)
    for value in (utc, elsewhere, naive, utc, elsewhere, datetime(2026, 12, 4, 10, 5, tzinfo=UTC)):
        assert serialize(value) == datetime_type.coerce_output_value(value)
    assert serialize(elsewhere).endswith("+01:00")


def test_the_written_datetimes_remembered_are_bounded() -> None:
    serialize = serializer(_datetime_type())
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for minute in range(leaves._ISO_TEXTS_MAX + 10):
        value = start + timedelta(minutes=minute)
        assert serialize(value) == value.isoformat()
    assert 0 < len(leaves._ISO_TEXTS) <= leaves._ISO_TEXTS_MAX
