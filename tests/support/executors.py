"""The planned executor, recording each instance it makes (weakly)."""

from __future__ import annotations

import weakref
from typing import Any

from gateway.engine import PlannedExecutionContext, planned_execution_context


def recording_executor() -> tuple[type[PlannedExecutionContext], list[weakref.ref[Any]]]:
    """An execution context class for a schema, and the list that receives a weak
    reference to each executor it makes: dead once nothing holds that executor."""
    made: list[weakref.ref[Any]] = []

    class Recorded(planned_execution_context()):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    return Recorded, made
