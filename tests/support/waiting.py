"""Waiting on a condition, never on the clock: tests stay right on a loaded machine."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

# Only stops a broken test; a passing one returns as soon as its condition holds.
DEFAULT_LIMIT_S = 60.0


async def until(
    condition: Callable[[], bool | Awaitable[bool]], *, limit_s: float = DEFAULT_LIMIT_S
) -> None:
    """Return once `condition()` is true, checking every few milliseconds."""
    async with asyncio.timeout(limit_s):
        while True:
            outcome = condition()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await asyncio.sleep(0.02)
