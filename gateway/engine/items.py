"""A list of plain objects completed in one function, with no `Path` or call per item.

A list whose items' plan holds only leaves its objects have as attributes,
`__typename`, and objects or lists of objects of the same kind held as attributes (a
neighbourhood's `edges { type source { id } }`, metric series with their
`points { time value }`) is completed by one function compiled per plan: a loop that
builds each item's response dict, reading and serializing each leaf as the compiled
object plan does (gateway/engine/compile.py). The general path makes a `Path`, calls
the item's compiled function and guards it per item, and completes an item's list
as a list of its own; here nothing but the dicts and lists is made.

Anything the loop does not expect (a null item, in the list or an item's list, a
null where the schema says non-null, an item's list that is not a `list`, an object
of a class `is_type_of` has not accepted before, a serializer that refuses a value)
gives the whole list back to the executor's general path, which completes it item by
item and reports the error exactly as it always has. Only a `list` is taken, so
giving it back reads nothing twice that could change: the items' attributes are
plain values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graphql.pyutils import Undefined

from gateway.engine.compile import attribute_read, define, serialized_value
from gateway.engine.leaves import MAX_INT, MIN_INT
from gateway.engine.plan import (
    ATTRIBUTE,
    CAST_ATTRIBUTE,
    LEAF,
    OBJECT_SHAPE,
    TYPENAME,
    ListShape,
    ObjectPlan,
    ObjectShape,
    Shape,
)

if TYPE_CHECKING:
    from gateway.engine.plan import AnyExecutor

# A list of the plan's objects to their response dicts.
ItemsCompletion = Callable[[list[Any]], list[dict[str, Any]]]

# Objects (or lists of them) inside an item, inside an item's objects: deeper
# selections are rare in a list this function pays off for, and each level adds lines
# to every compile.
_MAX_DEPTH = 2


class _Unexpected(Exception):
    """An item the compiled loop does not complete; the general path will."""


def complete_plain_items(
    executor: AnyExecutor, item: Shape, items: list[Any]
) -> list[dict[str, Any]] | None:
    """The items' response dicts, or None when the general path must complete them."""
    if item.kind != OBJECT_SHAPE or item.needs_info:
        return None
    complete = item.plan(executor).compiled_items(executor)  # type: ignore[attr-defined]
    if complete is None:
        return None
    try:
        return complete(items)  # type: ignore[no-any-return]
    except Exception:
        return None


def compile_items(plan: ObjectPlan, executor: AnyExecutor) -> ItemsCompletion | None:
    """The loop over a list of `plan`'s objects, or None when its selection holds
    anything but leaves, `__typename` and plain objects of the same kind."""
    names: dict[str, Any] = {
        "Unexpected": _Unexpected,
        "Undefined": Undefined,
        "CAST": CAST_ATTRIBUTE,
        "MIN": MIN_INT,
        "MAX": MAX_INT,
    }
    body = _object(plan, executor, "source", "item", "", names, depth=0)
    if body is None:
        return None
    lines = [
        "def complete_items(items):",
        "    completed = []",
        "    append = completed.append",
        "    for source in items:",
        *(f"        {line}" for line in body),
        "        append(item)",
        "    return completed",
    ]
    complete: ItemsCompletion = define(lines, names, f"<items {plan.object_type.name}>")
    return complete


def _object(
    plan: ObjectPlan,
    executor: AnyExecutor,
    source: str,
    target: str,
    prefix: str,
    names: dict[str, Any],
    *,
    depth: int,
) -> list[str] | None:
    """Lines that set `target` to the response dict of the object `source` (not
    null), or None when the plan is not one this loop completes."""
    lines: list[str] = []
    if plan.is_type_of is None:
        # graphql-core checks nothing of the object; an error in its place it reports.
        lines.append(f"if isinstance({source}, Exception): raise Unexpected")
    elif plan.accepted is not None:
        # Classes `is_type_of` accepted (ObjectPlan.accepted): filled by the general
        # path, so the first list of a new class takes it.
        names[f"A{prefix}"] = plan.accepted
        lines.append(f"if type({source}) not in A{prefix} or hasattr({source}, CAST):")
        lines.append("    raise Unexpected")
    else:
        return None
    values: list[str] = []
    for index, field in enumerate(plan.fields):
        key = repr(field.key)
        variable = f"v{prefix}_{index}"
        if field.mode == TYPENAME:
            values.append(f"{key}: {field.parent_name!r}")
            continue
        if field.mode not in (LEAF, ATTRIBUTE) or field.attribute is None:
            return None
        read = attribute_read(field, source)
        on_null = "raise Unexpected" if field.non_null else f"{variable} = None"
        if field.mode == LEAF:
            serialized = serialized_value(field, f"S{prefix}_{index}", names)
            lines += [
                f"value = {read}",
                "if value is None or value is Undefined:",
                f"    {on_null}",
                "else:",
                f"    {variable} = {serialized}",
            ]
        elif field.mode == ATTRIBUTE and depth < _MAX_DEPTH:
            child = f"c{prefix}_{index}"
            inner = _inner(
                field.shape, executor, child, variable, f"{prefix}_{index}", names, depth
            )
            if inner is None:
                return None
            lines += [
                f"{child} = {read}",
                f"if {child} is None or {child} is Undefined:",
                f"    {on_null}",
                "else:",
                *(f"    {line}" for line in inner),
            ]
        else:
            return None
        values.append(f"{key}: {variable}")
    lines.append(f"{target} = {{{', '.join(values)}}}")
    return lines


def _inner(
    shape: Shape,
    executor: AnyExecutor,
    child: str,
    variable: str,
    prefix: str,
    names: dict[str, Any],
    depth: int,
) -> list[str] | None:
    """Lines that set `variable` to the response of `child` (not null): an object's
    dict, or a list of objects' dicts; None when `child` is neither, of plain objects."""
    item = shape.item if isinstance(shape, ListShape) else shape
    if not isinstance(item, ObjectShape) or item.needs_info:
        return None
    try:
        plan = item.plan(executor)
    except Exception:  # completing the field reports it, as before
        return None
    if item is shape:
        return _object(plan, executor, child, variable, prefix, names, depth=depth + 1)
    source, target = f"s{prefix}", f"i{prefix}"
    body = _object(plan, executor, source, target, prefix, names, depth=depth + 1)
    if body is None:
        return None
    return [
        f"if type({child}) is not list:",
        "    raise Unexpected",
        f"{variable} = []",
        f"for {source} in {child}:",
        # A null item is an error or a null by the item's type: the general path's.
        f"    if {source} is None:",
        "        raise Unexpected",
        *(f"    {line}" for line in body),
        f"    {variable}.append({target})",
    ]
