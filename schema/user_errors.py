"""`userErrors` in mutation payloads: expected failures a client can act on."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TypeVar

import strawberry

from resolvers.errors import ClientError, ErrorCode
from stores import Conflict, InvalidInput, NotFound

T = TypeVar("T")

# Failures that belong in the payload; authentication and permission errors, store
# outages and bugs stay top-level errors with their codes.
_PAYLOAD_CODES = frozenset({ErrorCode.BAD_USER_INPUT, ErrorCode.NOT_FOUND, ErrorCode.CONFLICT})

UserErrorCode = strawberry.enum(ErrorCode, name="ErrorCode", description="Error codes.")


@strawberry.type(description="An expected failure: what went wrong, with which input field.")
class UserError:
    field: str | None = strawberry.field(description="The input field at fault, if one is.")
    message: str
    code: UserErrorCode  # type: ignore[valid-type]


def user_error_of(exc: Exception) -> UserError | None:
    """The payload error for `exc`, or None when it is not a client's mistake."""
    if isinstance(exc, ClientError):
        if exc.code in _PAYLOAD_CODES:
            return UserError(field=exc.field, message=exc.message, code=exc.code)
        return None
    if isinstance(exc, InvalidInput):
        return UserError(field=exc.field, message=exc.message, code=ErrorCode.BAD_USER_INPUT)
    if isinstance(exc, NotFound):
        return UserError(field=exc.field, message=str(exc), code=ErrorCode.NOT_FOUND)
    if isinstance(exc, Conflict):
        return UserError(field=exc.field, message=str(exc), code=ErrorCode.CONFLICT)
    return None


async def attempt(action: Awaitable[T]) -> tuple[T | None, list[UserError]]:
    """Run a mutation's work; expected failures become `userErrors`, the rest propagate."""
    try:
        return await action, []
    except (ClientError, InvalidInput, NotFound, Conflict) as exc:
        error = user_error_of(exc)
        if error is None:
            raise
        return None, [error]
