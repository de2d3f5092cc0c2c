"""A connection's edges completed straight from the rows a store read for them.

`RowEdges` (schema/rows.py) are the edges of a connection whose nodes are rows of
the columns the document selects. When the edge's plan reads only `cursor`, `node`
and `__typename`, and the node's only leaves its row holds and `__typename`, one
function compiled per edge plan and reader turns each row into the edge's response
dict: no edge or node object, no `Path`, no call per object. It reads and serializes
each leaf as the compiled object plan does (gateway/engine/compile.py). A connection
field of the node read with the rows (`NestedPages`: a page of agents and each
agent's `tasks`) is completed in the same function from the row's page, when the
field is one its resolver would answer from that page (schema/settled.py) and its
selection is `edges` over rows, `totalCount` and `__typename`. Anything it does not
expect (a null where the schema says non-null, a serializer that refuses a value)
gives the list back to the executor's general path, which makes the objects and
reports the error exactly as it always has.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.engine.compile import define, serialized_value
from gateway.engine.leaves import ENUM_NAMES, MAX_INT, MIN_INT
from gateway.engine.plan import (
    ATTRIBUTE,
    LEAF,
    OBJECT_SHAPE,
    RESOLVE,
    TYPENAME,
    FieldPlan,
    ListShape,
    ObjectPlan,
    ObjectShape,
    Shape,
)
from schema.rows import NestedPages, RowEdges, RowReader
from stores.postgres.records import ColumnRow

if TYPE_CHECKING:
    from gateway.engine.executor import PlannedExecutionContext

# A row (and its page of the nested connection, if any) to its edge's response dict.
RowCompletion = Callable[[ColumnRow, Any], dict[str, Any]]


class _Unexpected(Exception):
    """A row the compiled function does not complete (a null in a non-null field)."""


def complete_row_edges(
    executor: PlannedExecutionContext, item: Shape, edges: RowEdges
) -> list[dict[str, Any]] | None:
    """The edges' response dicts, or None when the general path must complete them."""
    nested = edges.nested
    complete = _completion(executor, item, edges.reader, edges.cursors is None, nested)
    if complete is None:
        return None
    try:
        if nested is None:
            return [complete(row, None) for row in edges.rows]
        return [complete(row, page) for row, page in zip(edges.rows, nested.pages, strict=True)]
    except Exception:
        return None


def _completion(
    executor: PlannedExecutionContext,
    item: Shape,
    reader: RowReader[Any],
    cursor_is_id: bool,
    nested: NestedPages | None,
) -> RowCompletion | None:
    """The edge item's function over rows of `reader`, compiled once per edge plan and
    what shapes it (None: the general path completes these edges)."""
    if item.kind != OBJECT_SHAPE or item.needs_info:
        return None
    plan = item.plan(executor)  # type: ignore[attr-defined]
    key = (reader, cursor_is_id, None if nested is None else (nested.field_name, nested.reader))
    completers = plan.row_completers
    try:
        complete: RowCompletion | None = completers[key]
    except KeyError:
        complete = completers[key] = _compile(executor, plan, reader, cursor_is_id, nested)
    return complete


def _compile(
    executor: PlannedExecutionContext,
    edge_plan: ObjectPlan,
    reader: RowReader[Any],
    cursor_is_id: bool,
    nested: NestedPages | None,
) -> RowCompletion | None:
    names: dict[str, Any] = {"Unexpected": _Unexpected, "MIN": MIN_INT, "MAX": MAX_INT}
    # What an object of the reader holds, by attribute: an expression over the row.
    held = reader.held(names)
    lines = ["def complete(row, page):", "    node_id = str(row[0])"]
    edge_values: list[str] = []
    for index, field in enumerate(edge_plan.fields):
        key = repr(field.key)
        if field.mode == TYPENAME:
            edge_values.append(f"{key}: {field.parent_name!r},")
        elif field.mode == LEAF and field.attribute == "cursor" and cursor_is_id:
            lines += leaf_lines(field, f"e{index}", "node_id", names)
            edge_values.append(f"{key}: e{index},")
        elif field.mode == ATTRIBUTE and field.attribute == "node":
            node = _node(executor, field, reader, held, names, f"n{index}", nested)
            if node is None:
                return None
            lines += node
            edge_values.append(f"{key}: n{index},")
        else:
            return None
    lines.append("    return {" + " ".join(edge_values) + "}")
    complete: RowCompletion = define(lines, names, f"<rows {edge_plan.object_type.name}>")
    return complete


def _node(
    executor: PlannedExecutionContext,
    field: FieldPlan,
    reader: RowReader[Any],
    held: dict[str, str],
    names: dict[str, Any],
    name: str,
    nested: NestedPages | None,
) -> list[str] | None:
    shape = field.shape
    if not isinstance(shape, ObjectShape) or shape.needs_info:
        return None
    plan = shape.plan(executor)
    # The reader's objects are of its type's own class, which Strawberry's
    # `is_type_of` accepts (a check that reads the info is not Strawberry's).
    if plan.object_type.name != reader.type_name or plan.is_type_of_needs_info:
        return None
    lines: list[str] = []
    values: list[str] = []
    for index, leaf in enumerate(plan.fields):
        key = repr(leaf.key)
        if leaf.mode == TYPENAME:
            values.append(f"{key}: {leaf.parent_name!r},")
            continue
        variable = f"{name}_{index}"
        if leaf.mode == RESOLVE and nested is not None and leaf.name == nested.field_name:
            connection = _nested_connection(executor, leaf, nested, names, variable)
            if connection is None:
                return None
            lines += connection
            values.append(f"{key}: {variable},")
            continue
        if leaf.mode != LEAF or leaf.attribute not in held:
            return None
        enum_column = reader.enum_column(leaf.attribute)
        names_by_value = _enum_names(leaf, enum_column[1]) if enum_column else None
        if enum_column is not None and names_by_value is not None:
            names[f"N_{variable}"] = names_by_value
            lines += _enum_leaf(leaf, variable, f"row[{enum_column[0]}]")
        else:
            # The global id is made from the id: a text, never null.
            never_null = leaf.attribute == "_id"
            lines += leaf_lines(leaf, variable, held[leaf.attribute], names, never_null=never_null)
        values.append(f"{key}: {variable},")
    lines.append(f"    {name} = {{" + " ".join(values) + "}")
    return lines


def _nested_connection(
    executor: PlannedExecutionContext,
    field: FieldPlan,
    nested: NestedPages,
    names: dict[str, Any],
    variable: str,
) -> list[str] | None:
    """Lines that set `variable` to the response of the connection `field` from the
    row's `page`, as its resolver would answer it from the same page settled for it
    (schema/settled.py: only a field answered that way, with no wrapper of its own to
    run, is taken here), or None when the general path must complete it."""
    direct = field.direct
    shape = field.shape
    if direct is None or direct.settled is None or not isinstance(shape, ObjectShape):
        return None
    if shape.needs_info:
        return None
    plan = shape.plan(executor)
    if plan.is_type_of_needs_info:
        return None
    lines: list[str] = []
    values: list[str] = []
    for index, inner in enumerate(plan.fields):
        key = repr(inner.key)
        part = f"{variable}_{index}"
        if inner.mode == TYPENAME:
            values.append(f"{key}: {inner.parent_name!r},")
        elif inner.mode == LEAF and inner.attribute == "total_count":
            lines += leaf_lines(inner, part, "page.total", names)
            values.append(f"{key}: {part},")
        elif inner.mode == ATTRIBUTE and inner.attribute == "edges":
            edges = _nested_edges(executor, inner, nested.reader)
            if edges is None:
                return None
            names[f"C_{part}"] = edges
            lines.append(f"    {part} = [C_{part}(item, None) for item in page.items]")
            values.append(f"{key}: {part},")
        else:
            return None
    lines.append(f"    {variable} = {{" + " ".join(values) + "}")
    return lines


def _nested_edges(
    executor: PlannedExecutionContext, field: FieldPlan, reader: RowReader[Any]
) -> RowCompletion | None:
    """The nested connection's edges' row completion (a row's cursor is its id, as for
    every nested page's edges: `TaskConnection.from_rows`)."""
    shape = field.shape
    if not isinstance(shape, ListShape) or shape.needs_info:
        return None
    return _completion(executor, shape.item, reader, True, None)


def _enum_names(field: FieldPlan, by_value: Mapping[Any, Any]) -> dict[Any, str] | None:
    """A column's values straight to the names the field's enum serializer gives their
    members, when that serializer is a plain enum's and names every one of them."""
    names_by_member = ENUM_NAMES.get(field.serialize)  # type: ignore[arg-type]
    if names_by_member is None:
        return None
    names: dict[Any, str] = {}
    for value, member in by_value.items():
        name = names_by_member.get(id(member))
        if name is None:
            return None
        names[value] = name
    return names


def _enum_leaf(field: FieldPlan, variable: str, read: str) -> list[str]:
    # A value the mapping lacks raises KeyError: the general path reports it.
    return _checked(field, variable, read, f"N_{variable}[value]")


def leaf_lines(
    field: FieldPlan, variable: str, read: str, names: dict[str, Any], *, never_null: bool = False
) -> list[str]:
    """Lines that set `variable` to the leaf read by `read`, serialized; a null where
    the schema says non-null raises `Unexpected` (a name `names` must hold)."""
    serialized = serialized_value(field, f"S_{variable}", names)
    if never_null:
        return [f"    value = {read}", f"    {variable} = {serialized}"]
    return _checked(field, variable, read, serialized)


def _checked(field: FieldPlan, variable: str, read: str, serialized: str) -> list[str]:
    """`variable` set to `serialized` (an expression over `value`, read by `read`), a
    null giving up on the row where the schema says non-null."""
    on_null = "raise Unexpected" if field.non_null else f"{variable} = None"
    return [
        f"    value = {read}",
        "    if value is None:",
        f"        {on_null}",
        "    else:",
        f"        {variable} = {serialized}",
    ]
