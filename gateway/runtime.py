"""Process settings for a long-running server."""

from __future__ import annotations

import gc

# Collect the youngest generation after 20,000 net allocations instead of 700. A large
# GraphQL response allocates hundreds of thousands of short-lived objects, nearly all
# freed by reference counting (see `OperationHooks`); at the default every request ran
# dozens of collections and several full ones that walked the whole schema. Measured on
# S2 at 16 concurrent requests: about 25% less CPU per request, far fewer p99 outliers.
YOUNG_GENERATION_THRESHOLD = 20_000


def tune_gc() -> None:
    """Call once, after start-up and before serving: what exists by then (modules, the
    schema, the app) lives as long as the process, so it is moved out of the collector's
    sight (`gc.freeze`), and collections become rarer."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, oldest)
