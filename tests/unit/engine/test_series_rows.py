"""Metric series over the store's rows (`MetricSeriesRows`) answer on the planned
executor exactly as graphql-core's executor answers over the `MetricSeries` objects
they stand for; when the selection allows, without making those objects at all.
`MetricSeries.agent` is an `Agent`, a federation entity: the schemas are federated."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import pytest
import strawberry
from strawberry.federation import Schema

from gateway.engine import planned_execution_context
from schema.metrics import MetricSeries, MetricSeriesRows
from schema.relay import id_text
from stores.metrics import Aggregate, SeriesRows, Source
from tests.support.executors import assert_same_answer

FIRST, SECOND, THIRD = (UUID(int=n) for n in (3, 1, 2))
T0 = datetime(2026, 12, 1, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)

# What the store read: (agent_id, name, time, value), each series' rows together, in
# the store's order (not the order asked).
TABLES: dict[str, list[tuple[Any, ...]]] = {
    "plain": [
        (SECOND, "cpu", T0, 1.5),
        (SECOND, "cpu", T0 + FIVE_MINUTES, None),
        (FIRST, "cpu", T0, 2.0),
        (FIRST, "mem", T0 + FIVE_MINUTES, 4.25),
    ],
    # A null where the schema says non-null, and a Float the Float type cannot hold.
    "null time": [(FIRST, "cpu", T0, 1.0), (FIRST, "mem", None, 2.0)],
    "not a number": [(FIRST, "cpu", T0, math.nan)],
}
MADE: list[MetricSeriesRows] = []


@strawberry.type
class Query:
    @strawberry.field
    def series(self, table: str = "plain") -> list[MetricSeries]:
        # Asked for: three agents by two names; THIRD has no rows at all.
        keys = [(agent, name) for agent in (FIRST, SECOND, THIRD) for name in ("cpu", "mem")]
        read = SeriesRows(Source.MINUTE, TABLES[table])
        answer = MetricSeriesRows(keys, read, "5m", Aggregate.AVG)
        MADE.append(answer)
        return answer  # type: ignore[return-value]


STOCK = Schema(query=Query)
PLANNED = Schema(query=Query, execution_context_class=planned_execution_context())


async def _same(query: str, table: str = "plain") -> Any:
    variables = {"table": table}
    expected = await STOCK.execute(query, variable_values=variables)
    MADE.clear()
    answered = await PLANNED.execute(query, variable_values=variables)
    assert_same_answer(answered, expected)
    return answered


QUERY = """query($table: String!) { series(table: $table) { agentId name bucket aggregate
  source __typename points { time value __typename } n: name } }"""


async def test_rows_answer_without_making_objects() -> None:
    answered = await _same(QUERY)
    series = answered.data["series"]
    assert [(s["agentId"], s["name"]) for s in series] == [
        (id_text("Agent", agent), name)
        for agent in (FIRST, SECOND, THIRD)
        for name in ("cpu", "mem")
    ]
    assert series[2] == {
        "agentId": id_text("Agent", SECOND),
        "name": "cpu",
        "bucket": "5m",
        "aggregate": "AVG",
        "source": "MINUTE",
        "__typename": "MetricSeries",
        "points": [
            {"time": T0.isoformat(), "value": 1.5, "__typename": "MetricBucket"},
            {"time": (T0 + FIVE_MINUTES).isoformat(), "value": None, "__typename": "MetricBucket"},
        ],
        "n": "cpu",
    }
    assert [len(s["points"]) for s in series] == [1, 1, 2, 0, 0, 0]
    [rows] = MADE
    assert rows._made is None


@pytest.mark.parametrize("table", ["null time", "not a number"])
async def test_a_row_it_does_not_expect_takes_the_general_path(table: str) -> None:
    answered = await _same(QUERY, table)
    assert answered.errors
    [rows] = MADE
    assert rows._made is not None


async def test_a_selection_it_does_not_complete_takes_the_general_path() -> None:
    # Two selections of the buckets: the one loop over the rows makes one of them.
    query = """query($table: String!) { series(table: $table) {
      name points { time } again: points { value } } }"""
    await _same(query)
    [rows] = MADE
    assert rows._made is not None


async def test_an_empty_answer() -> None:
    # No agent asked for: no rows, no series.
    @strawberry.type
    class Empty:
        @strawberry.field
        def series(self) -> list[MetricSeries]:
            read = SeriesRows(Source.RAW, [])
            return MetricSeriesRows([], read, "1h", Aggregate.SUM)  # type: ignore[return-value]

    query = "{ series { name points { value } } }"
    expected = await Schema(query=Empty).execute(query)
    planned = Schema(query=Empty, execution_context_class=planned_execution_context())
    answered = await planned.execute(query)
    assert_same_answer(answered, expected)
    assert answered.data == {"series": []}
