"""From GraphQL's "absent or null" to the stores' "UNSET or None"."""

from __future__ import annotations

from typing import TypeVar

import strawberry

from resolvers.errors import ClientError, ErrorCode
from stores.postgres.inputs import UNSET, Unset

T = TypeVar("T")


def given(value: T | None, *, field: str) -> T | Unset:
    """An optional input field that may be left out but not set to null."""
    if value is strawberry.UNSET:
        return UNSET
    if value is None:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"{field} cannot be null; leave it out instead", field=field
        )
    return value


def given_nullable(value: T | None) -> T | Unset | None:
    """An optional input field where null means "clear it"."""
    return UNSET if value is strawberry.UNSET else value
