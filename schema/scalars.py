"""Scalars shared by the schema types."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


__all__ = ["JSON", "json_object"]
