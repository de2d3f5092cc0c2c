"""Arguments converted by `DirectResolver`'s compiled conversions equal what Strawberry's
`convert_arguments` makes of the same coerced values, for every field of the schema:
input objects (every field given, only the required ones, nulls), lists and ids."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import strawberry
from graphql import (
    GraphQLEnumType,
    GraphQLField,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    Undefined,
    coerce_input_value,
)
from strawberry import relay
from strawberry.types.arguments import convert_arguments

from gateway.engine.resolvers import DirectResolver, direct_resolver
from schema import build_schema

_AGENT_ID = base64.b64encode(b"Agent:0b9a3c4e-7f7e-4a53-9d0e-2d2f3f9e6a11").decode()
# Tried in turn for a custom scalar until its parser takes one.
_SCALAR_CANDIDATES: tuple[Any, ...] = (
    "2026-12-07T00:00:00+00:00",
    _AGENT_ID,
    {"key": [1, "two"]},
    "text",
    3,
    0.5,
    True,
)


def _scalar_value(scalar: GraphQLScalarType) -> Any:
    for candidate in _SCALAR_CANDIDATES:
        try:
            scalar.parse_value(candidate)
        except Exception:
            continue
        return _AGENT_ID if scalar.name == "ID" else candidate
    raise AssertionError(f"no sample value for scalar {scalar.name}")


def _sample(type_: GraphQLInputType, *, full: bool, nulls: bool) -> Any:
    """An external (JSON) value of `type_`: optional input fields all given (`full`),
    given as null (`nulls`), or left out."""
    if isinstance(type_, GraphQLNonNull):
        return _sample(type_.of_type, full=full, nulls=False)
    if nulls:
        return None
    if isinstance(type_, GraphQLList):
        return [_sample(type_.of_type, full=full, nulls=False)]
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    if isinstance(type_, GraphQLScalarType):
        return _scalar_value(type_)
    assert isinstance(type_, GraphQLInputObjectType)
    if type_.is_one_of:
        name, field = next(iter(type_.fields.items()))
        return {name: _sample(field.type, full=full, nulls=False)}
    value = {}
    for name, field in type_.fields.items():
        if _required(field.type, field.default_value) or full:
            value[name] = _sample(field.type, full=full, nulls=nulls)
    return value


def _required(type_: GraphQLInputType, default: Any) -> bool:
    return isinstance(type_, GraphQLNonNull) and default is Undefined


def _fields_with_arguments(
    schema: GraphQLSchema,
) -> Iterator[tuple[str, GraphQLField, DirectResolver]]:
    for type_ in schema.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, field in type_.fields.items():
            direct = direct_resolver(field) if field.args else None
            if direct is not None:
                yield f"{type_.name}.{name}", field, direct


_SCHEMA = build_schema()
_FIELDS = sorted(_fields_with_arguments(_SCHEMA._schema), key=lambda entry: entry[0])


@pytest.mark.parametrize(
    ("full", "nulls"),
    [(True, False), (False, False), (True, True)],
    ids=["all", "required", "nulls"],
)
def test_compiled_conversions_equal_strawberrys(full: bool, nulls: bool) -> None:
    compared_inputs = 0
    for coordinate, field, direct in _FIELDS:
        coerced = {
            name: coerce_input_value(_sample(argument.type, full=full, nulls=nulls), argument.type)
            for name, argument in field.args.items()
            if full or _required(argument.type, argument.default_value)
        }
        expected = convert_arguments(
            coerced,
            direct.field.arguments,
            scalar_registry=direct.scalar_registry,
            config=direct.config,
        )
        converted, _ = direct.convert(None, coerced)
        assert converted == expected, coordinate
        assert [type(value) for value in converted.values()] == [
            type(value) for value in expected.values()
        ], coordinate
        if direct.compiled_arguments is not None and any(
            isinstance(_named(argument.type), GraphQLInputObjectType)
            for argument in field.args.values()
        ):
            compared_inputs += 1
    # Most mutations take an input object: each of them went through a compiled one.
    assert compared_inputs >= 20


def _named(type_: GraphQLInputType) -> GraphQLInputType:
    while isinstance(type_, (GraphQLNonNull, GraphQLList)):
        type_ = type_.of_type
    return type_


@strawberry.input
class _Step:
    name: str
    note: str | None
    after: list[relay.GlobalID] | None = None


@strawberry.input
class _Plan:
    steps: list[_Step]
    owner: relay.GlobalID | None = strawberry.UNSET


@strawberry.type
class _Query:
    @strawberry.field
    def count(self, plan: _Plan, extra: list[_Plan | None] | None = None) -> int:
        return len(plan.steps)


def test_nullable_fields_without_a_default_and_nested_lists() -> None:
    query_type = strawberry.Schema(query=_Query)._schema.query_type
    assert query_type is not None
    field = query_type.fields["count"]
    direct = direct_resolver(field)
    assert direct is not None and direct.compiled_arguments is not None
    steps = [{"name": "a"}, {"name": "b", "note": None, "after": [_AGENT_ID]}]
    for arguments in (
        {"plan": {"steps": steps}},
        {"plan": {"steps": [], "owner": None}, "extra": [None, {"steps": steps}]},
    ):
        coerced = {
            name: coerce_input_value(value, field.args[name].type)
            for name, value in arguments.items()
        }
        expected = convert_arguments(
            coerced, direct.field.arguments, direct.scalar_registry, direct.config
        )
        assert direct.convert(None, coerced)[0] == expected


@strawberry.type
class _MaybeQuery:
    @strawberry.field
    def given(self, note: strawberry.Maybe[str | None] = None) -> bool:
        return note is not None


def test_maybe_keeps_strawberrys_own_conversion() -> None:
    query_type = strawberry.Schema(query=_MaybeQuery)._schema.query_type
    assert query_type is not None
    direct = direct_resolver(query_type.fields["given"])
    assert direct is not None and direct.compiled_arguments is None
    converted, _ = direct.convert(None, {"note": None})
    assert converted == {"note": strawberry.Some(None)}


@strawberry.input
class _Filter:
    name: str | None = None
    any_of: list[_Filter] | None = None


@strawberry.type
class _FilterQuery:
    @strawberry.field
    def matching(self, filter: _Filter) -> int:
        return len(filter.any_of or ())


def test_an_input_type_that_contains_itself_keeps_strawberrys_conversion() -> None:
    query_type = strawberry.Schema(query=_FilterQuery)._schema.query_type
    assert query_type is not None
    field = query_type.fields["matching"]
    direct = direct_resolver(field)
    assert direct is not None and direct.compiled_arguments is None
    coerced = {"filter": coerce_input_value({"anyOf": [{"name": "a"}]}, field.args["filter"].type)}
    converted, _ = direct.convert(None, coerced)
    assert converted == {"filter": _Filter(any_of=[_Filter(name="a")])}
