"""The planned executor, recording each instance it makes (weakly); the check that it
answered as graphql-core's own executor did."""

from __future__ import annotations

import weakref
from typing import Any

from gateway.engine import PlannedExecutionContext, planned_execution_context


def assert_same_answer(answered: Any, expected: Any) -> None:
    """Two execution results agree: `data`, and each error as a client sees it
    (message, path, locations, extensions)."""
    assert answered.data == expected.data
    assert [e.formatted for e in answered.errors or ()] == [
        e.formatted for e in expected.errors or ()
    ]


def recording_executor() -> tuple[type[PlannedExecutionContext], list[weakref.ref[Any]]]:
    """An execution context class for a schema, and the list that receives a weak
    reference to each executor it makes: dead once nothing holds that executor."""
    made: list[weakref.ref[Any]] = []

    class Recorded(planned_execution_context()):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(weakref.ref(self))

    return Recorded, made
