"""Scalars shared by the schema types."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import TYPE_CHECKING, Any

from strawberry.schema.types.base_scalars import DateTimeDefinition

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
    Strawberry's way, which decides and words refusals as before."""
    if isinstance(value, str) and _RFC_3339.fullmatch(value):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    return _parse_as_strawberry(value)


# The schema's scalar for `datetime` (schema/build.py: `scalar_overrides`).
DATETIME = dataclasses.replace(DateTimeDefinition, parse_value=parse_datetime)

__all__ = ["DATETIME", "JSON", "json_object", "parse_datetime"]
