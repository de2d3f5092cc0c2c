"""Field definitions by parent type, introspection's `__schema` and `__type` included."""

from __future__ import annotations

from graphql import (
    GraphQLField,
    GraphQLNamedType,
    GraphQLSchema,
    is_interface_type,
    is_object_type,
)
from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef


def field_definition(
    schema: GraphQLSchema, parent: GraphQLNamedType | None, name: str
) -> GraphQLField | None:
    """None for `__typename` (a leaf with no cost and no arguments) and unknown fields."""
    if parent is None:
        return None
    if name == "__schema" and parent is schema.query_type:
        return SchemaMetaFieldDef
    if name == "__type" and parent is schema.query_type:
        return TypeMetaFieldDef
    if is_object_type(parent) or is_interface_type(parent):
        field: GraphQLField | None = parent.fields.get(name)
        return field
    return None
