"""The `idempotencyKey` of every mutation input: `login` and `logout` alone take none.

`login` is anonymous (keys belong to a signed-in caller) and its answer, a new
session token, is never stored to be replayed; a retried `logout` carries a token
that has already ended.
"""

from __future__ import annotations

from typing import Any

import strawberry

DESCRIPTION = "A retry with the same key (1 to 200 characters, per user) replays the first answer."


def idempotency_key() -> Any:
    """The input field, declared once so every mutation documents it the same way."""
    return strawberry.field(default=None, description=DESCRIPTION)
