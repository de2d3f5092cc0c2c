"""What an operation costs: estimated before it runs, counted after (`extensions.cost`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OperationCost:
    """`requested` is known before execution starts (a rate limiter charges it);
    `actual` once the result is in, None until then."""

    requested: int
    actual: int | None = None
