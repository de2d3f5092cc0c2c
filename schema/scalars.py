"""Scalars shared by the schema types."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from graphql import GraphQLError, ValueNode, value_from_ast_untyped
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.scalars import JSON as StrawberryJSON
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.schema.types.scalar import DEFAULT_SCALAR_REGISTRY

from resolvers.errors import ClientError, ErrorCode

if TYPE_CHECKING:
    # The stores keep JSON objects as dicts; to the type checker the scalar is one too.
    JSON = dict[str, Any]
else:
    from strawberry.scalars import JSON


def json_object(value: object, *, field: str) -> dict[str, Any]:
    """A JSON input that must be an object (metadata, payloads, results)."""
    if not isinstance(value, dict):
        raise ClientError(
            ErrorCode.BAD_USER_INPUT,
            f"{field} must be a JSON object, not {type(value).__name__}",
            field=field,
        )
    return value


# RFC 3339's date-time, the shape clients send: date, time, optional fraction and
# offset. Python's parser reads it as dateutil's does; it also reads shapes dateutil
# refuses (a trailing dot, "T10.5" as half a second), which stay dateutil's to judge.
_RFC_3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:\d{2})?")
# Strawberry's own: dateutil's `isoparse`, its refusals coded as coercion errors.
assert DateTimeDefinition.parse_value is not None
_parse_as_strawberry = DateTimeDefinition.parse_value


def parse_datetime(value: object) -> object:
    """A `DateTime` input as Strawberry parses it, with an RFC 3339 text read by
    `datetime.fromisoformat` first (0.1 µs against dateutil's 5.8; S4 sends two a
    request). What that refuses (24:00, 30 February) and every other shape go
    Strawberry's way, which decides and words refusals as before. An instant
    outside the years 1 to 9999 in UTC (year 1 at +14:00) is refused too: PostgreSQL's
    driver cannot send it, and refused it with an internal error."""
    parsed = _read_datetime(value)
    if isinstance(parsed, datetime) and parsed.utcoffset():
        try:
            parsed.astimezone(UTC)
        except OverflowError:
            raise StrawberryInputCoercionError(
                f'Value cannot represent a DateTime: "{value}". In UTC it falls outside'
                " the years 1 to 9999."
            ) from None
    return parsed


def _read_datetime(value: object) -> object:
    if isinstance(value, str) and _RFC_3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return _parse_as_strawberry(value)


# The schema's scalar for `datetime` (schema/build.py: `scalar_overrides`).
DATETIME = dataclasses.replace(DateTimeDefinition, parse_value=parse_datetime)

# The deepest JSON value an input takes (metadata, payloads, filters, labels).
# orjson writes at most 254 levels, and a stored value is read back a few levels
# down a response, an audit row or an event: a deeper one could be written, never
# read. Literals stop sooner, at the parser's 200 levels of a document.
MAX_JSON_DEPTH = 64


def parse_json(value: object) -> object:
    """A `JSON` input as Strawberry's scalar takes it (the value itself), refused when
    it nests deeper than `MAX_JSON_DEPTH`."""
    containers = [value] if isinstance(value, dict | list) else []
    depth = 0
    while containers:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise GraphQLError(
                f"JSON values nest at most {MAX_JSON_DEPTH} levels of objects and lists;"
                " this one nests deeper."
            )
        containers = [
            item
            for container in containers
            for item in (container.values() if isinstance(container, dict) else container)
            if isinstance(item, dict | list)
        ]
    return value


def parse_json_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> object:
    """A `JSON` literal, refused at its place in the document when too deep (graphql-
    core's default would quote the whole literal back, indented, in the message)."""
    try:
        return parse_json(value_from_ast_untyped(node, variables))
    except GraphQLError as refusal:
        raise GraphQLError(refusal.message, node) from None


# The schema's scalar for `JSON`, Strawberry's with the depth bound.
JSON_SCALAR = dataclasses.replace(
    DEFAULT_SCALAR_REGISTRY[StrawberryJSON],
    parse_value=parse_json,
    parse_literal=parse_json_literal,
)

__all__ = [
    "DATETIME",
    "JSON",
    "JSON_SCALAR",
    "MAX_JSON_DEPTH",
    "json_object",
    "parse_datetime",
    "parse_json",
    "parse_json_literal",
]
