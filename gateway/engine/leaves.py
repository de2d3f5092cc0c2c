"""Leaf values to response values, exactly as graphql-core completes them, only sooner.

`serializer(leaf_type)` gives a function equal to graphql-core's `complete_leaf_value`
for a value that is not None: the common Python types go straight through (a `str`
for String and ID, an `int` in range for Int, a finite `float`, a `bool`, a member
of a Strawberry enum by a dict lookup, a UTC `datetime` of Strawberry's `DateTime`
by the text it last made for an equal one); anything else takes graphql-core's own
path, errors included.
"""

from __future__ import annotations

import enum
import math
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from graphql import (
    GraphQLBoolean,
    GraphQLEnumType,
    GraphQLFloat,
    GraphQLID,
    GraphQLInt,
    GraphQLLeafType,
    GraphQLString,
)
from graphql.pyutils import Undefined, inspect
from strawberry.relay import GlobalID
from strawberry.schema.schema_converter import CustomGraphQLEnumType
from strawberry.schema.types.base_scalars import isoformat

Serializer = Callable[[Any], Any]

MIN_INT = -(2**31)
MAX_INT = 2**31 - 1


def serializer(leaf_type: GraphQLLeafType) -> Serializer:
    coerce = leaf_type.coerce_output_value

    def complete(value: Any) -> Any:
        # graphql-core's complete_value and complete_leaf_value, for a value not None.
        if isinstance(value, Exception):
            raise value
        coerced = coerce(value)
        if coerced is Undefined or coerced is None:
            msg = (
                f"Expected `{inspect(leaf_type)}.coerce_output_value("
                f"{inspect(value)})` to return non-nullable value, returned:"
                f" {inspect(coerced)}"
            )
            raise TypeError(msg)
        return coerced

    # The fast paths hold only while the type still has graphql-core's own coercion.
    builtin = leaf_type.coerce_output_value is builtin_coercion(leaf_type)
    if builtin and leaf_type is GraphQLString:
        return lambda value: value if type(value) is str else complete(value)
    if builtin and leaf_type is GraphQLID:

        def serialize_id(value: Any) -> Any:
            kind = type(value)
            if kind is str:
                return value
            if kind is GlobalID:
                # serialize_id's answer for any non-builtin type: its str().
                return str(value)
            return complete(value)

        return serialize_id
    if builtin and leaf_type is GraphQLInt:
        return lambda value: (
            value if type(value) is int and MIN_INT <= value <= MAX_INT else complete(value)
        )
    if builtin and leaf_type is GraphQLFloat:
        return lambda value: (
            value if type(value) is float and math.isfinite(value) else complete(value)
        )
    if builtin and leaf_type is GraphQLBoolean:
        return lambda value: value if type(value) is bool else complete(value)
    if isinstance(leaf_type, CustomGraphQLEnumType) and _plain_enum(leaf_type):
        return _enum_serializer(leaf_type, complete)
    if leaf_type.coerce_output_value is isoformat:
        return _datetime_serializer(complete)
    return complete


# `isoformat()` of the UTC datetimes serialized lately, by value: a metric series'
# bucket times recur in every series of a response (S4: 20 series of the same 288
# slots), and formatting one costs several times a dict lookup. Bounded: cleared
# when full. Only UTC values (what asyncpg reads): equal datetimes in other zones
# are written with other offsets.
_ISO_TEXTS: dict[datetime, str] = {}
_ISO_TEXTS_MAX = 8192


def _datetime_serializer(complete: Serializer) -> Serializer:
    texts = _ISO_TEXTS

    def serialize_datetime(value: Any) -> Any:
        if type(value) is datetime and value.tzinfo is UTC:
            text = texts.get(value)
            if text is None:
                if len(texts) >= _ISO_TEXTS_MAX:
                    texts.clear()
                text = texts[value] = value.isoformat()
            return text
        return complete(value)

    return serialize_datetime


_BUILTIN_COERCIONS = {
    id(scalar): scalar.coerce_output_value
    for scalar in (GraphQLString, GraphQLID, GraphQLInt, GraphQLFloat, GraphQLBoolean)
}


def builtin_coercion(leaf_type: GraphQLLeafType) -> Serializer | None:
    """graphql-core's own output coercion of a built-in scalar; None for other types."""
    return _BUILTIN_COERCIONS.get(id(leaf_type))


def _plain_enum(enum_type: GraphQLEnumType) -> bool:
    # Strawberry's own coercion, over hashable values: a dict answers the same.
    method = type(enum_type).coerce_output_value
    if method is not CustomGraphQLEnumType.coerce_output_value:
        return False
    try:
        {value.value for value in enum_type.values.values()}
    except TypeError:
        return False
    return True


def _enum_serializer(enum_type: CustomGraphQLEnumType, complete: Serializer) -> Serializer:
    # CustomGraphQLEnumType.coerce_output_value returns the first name whose value
    # equals the member's value; setdefault keeps the first as well.
    names: dict[Any, str] = {}
    for name, value in enum_type.values.items():
        names.setdefault(value.value, name)
    wrapped = enum_type.wrapped_cls
    # By the member's identity: members live as long as their class, so an id found
    # is that member; `member.value` is a property, as slow as a small function call.
    members: list[enum.Enum] = list(wrapped.__members__.values())
    by_member = {id(member): names[member.value] for member in members if member.value in names}

    def serialize_enum(value: Any) -> Any:
        name = by_member.get(id(value))
        if name is not None:
            return name
        return complete(value)

    ENUM_NAMES[serialize_enum] = by_member
    return serialize_enum


# Each enum serializer's names by member identity, for compiled plans to inline
# (gateway/engine/compile.py); the names are never empty. Held as long as the plan
# holding the serializer.
ENUM_NAMES: weakref.WeakKeyDictionary[Serializer, dict[int, str]] = weakref.WeakKeyDictionary()
