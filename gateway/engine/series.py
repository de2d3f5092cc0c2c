"""Metric series completed straight from the rows the store read for them.

`metricSeries` answers a `MetricSeriesRows` (schema/metrics.py): the series asked
for, in order, over the store's rows `(agent_id, name, time, value)`. When the
series' plan reads only what a series holds as plain fields (`agentId`, `name`,
`bucket`, `aggregate`, `source`), `__typename` and at most one `points` of
buckets' `time`, `value` and `__typename`, one function compiled per plan turns
the rows into the response: a dict per bucket, appended to its series' list, then
a dict per series. No store `Series`, bucket tuple, `MetricSeries` object, `Path` or
call per item is made; leaves are read and serialized as the compiled object plan
does (gateway/engine/compile.py). Anything it does not expect (a field with a
resolver such as `agent`, a null where the schema says non-null, a serializer that
refuses a value) gives the list back to the executor's general path, which makes the
objects and reports the error exactly as it always has.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.engine.compile import define
from gateway.engine.leaves import MAX_INT, MIN_INT
from gateway.engine.plan import (
    ATTRIBUTE,
    LEAF,
    OBJECT_SHAPE,
    TYPENAME,
    FieldPlan,
    ListShape,
    ObjectPlan,
    ObjectShape,
    Shape,
)
from gateway.engine.rows import leaf_lines
from schema.metrics import MetricSeriesRows
from schema.relay import id_text

if TYPE_CHECKING:
    from gateway.engine.executor import PlannedExecutionContext

SeriesCompletion = Callable[[MetricSeriesRows], list[dict[str, Any]]]

# What every series of one answer holds the same, by attribute: where it is read.
_SHARED = {
    "bucket": "series.bucket",
    "aggregate": "series.aggregate",
    "source": "series.read.source",
}
# Where a bucket's leaves are in a store row, by attribute.
_BUCKET_COLUMNS = {"time": 2, "value": 3}


class _Unexpected(Exception):
    """A value the compiled function does not complete (a null in a non-null field)."""


def complete_series_rows(
    executor: PlannedExecutionContext, item: Shape, series: MetricSeriesRows
) -> list[dict[str, Any]] | None:
    """The series' response dicts, or None when the general path must complete them."""
    if item.kind != OBJECT_SHAPE or item.needs_info:
        return None
    plan = item.plan(executor)  # type: ignore[attr-defined]
    completers = plan.row_completers
    try:
        complete: SeriesCompletion | None = completers[MetricSeriesRows]
    except KeyError:
        complete = completers[MetricSeriesRows] = _compile(executor, plan)
    if complete is None:
        return None
    try:
        return complete(series)
    except Exception:
        return None


def _compile(executor: PlannedExecutionContext, plan: ObjectPlan) -> SeriesCompletion | None:
    if plan.object_type.name != "MetricSeries" or plan.is_type_of_needs_info:
        return None
    names: dict[str, Any] = {
        "Unexpected": _Unexpected,
        "MIN": MIN_INT,
        "MAX": MAX_INT,
        "id_text": id_text,
    }
    head = ["def complete(series):"]
    per_series: list[str] = []
    values: list[str] = []
    points: str | None = None
    for index, field in enumerate(plan.fields):
        key = repr(field.key)
        variable = f"v{index}"
        if field.mode == TYPENAME:
            values.append(f"{key}: {field.parent_name!r},")
            continue
        if field.mode == LEAF and field.attribute in _SHARED:
            # Serialized once for every series.
            head += leaf_lines(field, variable, _SHARED[field.attribute], names)
        elif field.mode == LEAF and field.attribute == "agent_id":
            read = "id_text('Agent', agent_id)"
            per_series += _in_loop(leaf_lines(field, variable, read, names))
        elif field.mode == LEAF and field.attribute == "name":
            per_series += _in_loop(leaf_lines(field, variable, "name", names))
        elif field.mode == ATTRIBUTE and field.attribute == "points" and points is None:
            bucket = _bucket_lines(executor, field, names)
            if bucket is None:
                return None
            points = "points.get((agent_id, name)) or []"
            head += [
                "    points = {}",
                "    for row in series.read.rows:",
                *_in_loop(bucket),
                "        key = (row[0], row[1])",
                "        run = points.get(key)",
                "        if run is None:",
                "            points[key] = [bucket]",
                "        else:",
                "            run.append(bucket)",
            ]
            per_series.append(f"        {variable} = {points}")
        else:
            return None
        values.append(f"{key}: {variable},")
    lines = [
        *head,
        "    completed = []",
        "    append = completed.append",
        "    for agent_id, name in series.keys:",
        *per_series,
        "        append({" + " ".join(values) + "})",
        "    return completed",
    ]
    complete: SeriesCompletion = define(lines, names, "<series MetricSeries>")
    return complete


def _bucket_lines(
    executor: PlannedExecutionContext, field: FieldPlan, names: dict[str, Any]
) -> list[str] | None:
    """Lines that set `bucket` to the response dict of the bucket in `row`, or None
    when `points`' selection is not one of its leaves and `__typename`."""
    shape = field.shape
    if not isinstance(shape, ListShape) or shape.needs_info:
        return None
    item = shape.item
    if not isinstance(item, ObjectShape) or item.needs_info:
        return None
    plan = item.plan(executor)
    # Buckets answer as the store's tuples: the general path checks no type either.
    if plan.object_type.name != "MetricBucket" or plan.is_type_of is not None:
        return None
    lines: list[str] = []
    values: list[str] = []
    for index, leaf in enumerate(plan.fields):
        key = repr(leaf.key)
        if leaf.mode == TYPENAME:
            values.append(f"{key}: {leaf.parent_name!r},")
            continue
        column = _BUCKET_COLUMNS.get(leaf.attribute or "")
        if leaf.mode != LEAF or column is None:
            return None
        variable = f"b{index}"
        lines += leaf_lines(leaf, variable, f"row[{column}]", names)
        values.append(f"{key}: {variable},")
    lines.append("    bucket = {" + " ".join(values) + "}")
    return lines


def _in_loop(lines: list[str]) -> list[str]:
    """Lines written for the function's body, one level deeper: inside its loops."""
    return ["    " + line for line in lines]
