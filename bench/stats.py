"""Percentiles as every report of the bench takes them."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(samples: Sequence[float], fraction: float) -> float:
    """The sample at `fraction` of the way through `samples` sorted (0.5 for the
    median, 0.99 for p99) by nearest rank, without interpolating: a figure some
    request really took. 0.0 for no samples."""
    if not samples:
        return 0.0
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
