"""An object plan compiled to one Python function, as graphql-jit compiles to JavaScript.

The function completes one object: each field of the plan unrolled in response order,
leaves read and serialized inline (`source.title`, a type check, the value), every
other field handed to the executor. It does what `PlannedExecutionContext`'s field
loop does, statement for statement, without the loop's per-field dispatch and
attribute lookups; errors take the same path (`handle_field_error`). An object held
as an attribute whose own selection is only leaves (an edge's `source { id }`) is
completed inside its parent's function, once `is_type_of` has accepted its class.
"""

from __future__ import annotations

import keyword
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from graphql import GraphQLBoolean, GraphQLID, GraphQLInt, GraphQLString
from graphql.pyutils import Path, Undefined

from gateway.engine.leaves import ENUM_NAMES, MAX_INT, MIN_INT, builtin_coercion
from gateway.engine.plan import (
    ATTRIBUTE,
    CAST_ATTRIBUTE,
    LEAF,
    RESOLVE,
    TYPENAME,
    FieldPlan,
    LeafShape,
    ListShape,
    ObjectPlan,
    ObjectShape,
)
from schema.settled import SETTLED_NULL

if TYPE_CHECKING:
    from gateway.engine.executor import PlannedExecutionContext
    from gateway.engine.plan import AnyExecutor

CompiledObject = Callable[["PlannedExecutionContext", Any, Path | None], Any]


def compile_object(plan: ObjectPlan, executor: AnyExecutor) -> CompiledObject:
    names: dict[str, Any] = {
        "Path": Path,
        # `Path` is a named tuple: its `__new__` is a Python function; this is what it does.
        "new_path": tuple.__new__,
        "Undefined": Undefined,
        "MIN": MIN_INT,
        "MAX": MAX_INT,
        "SETTLED_NULL": SETTLED_NULL,
        "CAST": CAST_ATTRIBUTE,
    }
    lines = [
        "def complete(executor, source, path):",
        "    results = {}",
    ]
    body: list[str] = []
    others = False
    for index, field in enumerate(plan.fields):
        names[f"F{index}"] = field
        key = repr(field.key)
        if field.mode == TYPENAME:
            body.append(f"results[{key}] = {field.parent_name!r}")
        elif field.mode == LEAF:
            body.extend(_leaf(field, index, names))
        elif field.mode == ATTRIBUTE and _plain_object(field):
            others = True
            body.extend(_object(field, index, _inlined(field, index, executor, names)))
        elif field.mode == ATTRIBUTE and _plain_list(field):
            others = True
            body.extend(_list(field, index))
        elif field.mode == RESOLVE and _plain_object(field):
            others = True
            body.extend(_settled_object(field, index))
        else:
            others = True
            body += [
                f"result = executor._execute_field(F{index}, source,"
                f" new_path(Path, (path, {key}, {field.parent_name!r})))",
                f"results[{key}] = result",
                "if is_awaitable(result):",
                "    if awaitable is None:",
                f"        awaitable = [{key}]",
                "    else:",
                f"        awaitable.append({key})",
            ]
    if not others:
        lines += [f"    {line}" for line in body]
        lines.append("    return results")
    else:
        lines += [
            "    is_awaitable = executor.is_awaitable",
            "    awaitable = None",
            "    try:",
            *(f"        {line}" for line in body),
            "    except Exception:",
            "        if awaitable:",
            "            executor.settle_in_background([results[key] for key in awaitable])",
            "        raise",
            "    if awaitable is None:",
            "        return results",
            "    return executor._gather_fields(results, awaitable)",
        ]
    complete: CompiledObject = define(lines, names, f"<plan {plan.object_type.name}>")
    return complete


def define(lines: list[str], names: dict[str, Any], label: str) -> Any:
    """The one function `lines` define, with `names` as its globals; `label` names its
    code in tracebacks and profiles (`<plan Task>`)."""
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), label, "exec"), names, namespace)
    (function,) = namespace.values()
    return function


def _plain_object(field: FieldPlan) -> bool:
    shape = field.shape
    return isinstance(shape, ObjectShape) and not shape.needs_info


def _plain_list(field: FieldPlan) -> bool:
    shape = field.shape
    return isinstance(shape, ListShape) and not shape.needs_info


def _completed(field: FieldPlan, index: int, complete: str, completed_type: str) -> list[str]:
    """Lines that complete `value` (not null) by `complete` and store the result, or
    the awaitable that finishes it: the tail of `_execute_field` and `_complete`."""
    key = repr(field.key)
    return [
        "if isinstance(value, Exception):",
        "    raise value",
        f"result = {complete}",
        f"if type(result) is {completed_type}:",
        f"    results[{key}] = result",
        "elif is_awaitable(result):",
        f"    results[{key}] = executor._await_completed(F{index}, result, field_path)",
        "    if awaitable is None:",
        f"        awaitable = [{key}]",
        "    else:",
        f"        awaitable.append({key})",
        "else:",
        f"    results[{key}] = result",
    ]


def _guarded(field: FieldPlan, index: int, lines: list[str]) -> list[str]:
    """`lines` with `_execute_field`'s error handling around them."""
    key = repr(field.key)
    return [
        "try:",
        *(f"    {line}" for line in lines),
        "except Exception as raw_error:",
        f"    executor.handle_field_error(raw_error, F{index}.return_type, F{index}.details,"
        " field_path)",
        f"    results[{key}] = None",
    ]


def _on_null(field: FieldPlan, index: int) -> str:
    if field.non_null:
        return f"raise TypeError(F{index}.null_message)"
    return f"results[{field.key!r}] = None"


def _list(field: FieldPlan, index: int) -> list[str]:
    """A list read from an attribute (a connection's edges): `_execute_field`,
    `_complete` and `_complete_nullable` inlined down to `_complete_list`."""
    complete = f"executor._complete_list(F{index}, F{index}.shape, None, field_path, value)"
    return [
        f"field_path = new_path(Path, (path, {field.key!r}, {field.parent_name!r}))",
        *_guarded(
            field,
            index,
            [
                f"value = {attribute_read(field)}",
                "if value is None or value is Undefined:",
                f"    {_on_null(field, index)}",
                "else:",
                *(f"    {line}" for line in _completed(field, index, complete, "list")),
            ],
        ),
    ]


def _settled_object(field: FieldPlan, index: int) -> list[str]:
    """An object field with a resolver: what the parent's page settled for it
    (`SettledValue`) completed inline, as `_execute_field` completes it; without one,
    or when it has nothing for this parent, `_execute_field` runs the resolver."""
    complete = (
        f"executor._complete_object(F{index}, F{index}.shape.plan(executor), None,"
        " field_path, value)"
    )
    return [
        f"field_path = new_path(Path, (path, {field.key!r}, {field.parent_name!r}))",
        f"settled = executor._settled.get(F{index})",
        "value = None",
        "if settled is not None:",
        "    try:",
        "        value = settled(source)",
        "    except Exception:",
        "        value = None",
        "if value is None:",
        f"    result = executor._execute_field(F{index}, source, field_path)",
        f"    results[{field.key!r}] = result",
        "    if is_awaitable(result):",
        "        if awaitable is None:",
        f"            awaitable = [{field.key!r}]",
        "        else:",
        f"            awaitable.append({field.key!r})",
        "else:",
        *(
            f"    {line}"
            for line in _guarded(
                field,
                index,
                [
                    "if value is SETTLED_NULL or value is Undefined:",
                    f"    {_on_null(field, index)}",
                    "else:",
                    *(f"    {line}" for line in _completed(field, index, complete, "dict")),
                ],
            )
        ),
    ]


def _object(
    field: FieldPlan, index: int, inlined: tuple[str | None, list[str]] | None
) -> list[str]:
    """An object read from an attribute: `_execute_field`, `_complete` and
    `_complete_nullable` inlined down to `_complete_object`; with `inlined`, the
    object's own fields as well (see `_inlined`)."""
    key = repr(field.key)
    on_null = (
        f"raise TypeError(F{index}.null_message)" if field.non_null else f"results[{key}] = None"
    )
    completed = [
        f"result = executor._complete_object(F{index},"
        f" F{index}.shape.plan(executor), None, field_path, value)",
        "if type(result) is dict:",
        f"    results[{key}] = result",
        "else:",
        f"    results[{key}] = executor._await_completed(F{index}, result, field_path)",
        "    if awaitable is None:",
        f"        awaitable = [{key}]",
        "    else:",
        f"        awaitable.append({key})",
    ]
    if inlined is not None:
        check, lines = inlined
        if check is None:
            completed = lines
        else:
            completed = [
                f"if {check}:",
                *(f"    {line}" for line in lines),
                "else:",
                *(f"    {line}" for line in completed),
            ]
    return [
        f"field_path = new_path(Path, (path, {key}, {field.parent_name!r}))",
        "try:",
        f"    value = {attribute_read(field)}",
        "    if value is None or value is Undefined:",
        f"        {on_null}",
        "    else:",
        "        if isinstance(value, Exception):",
        "            raise value",
        *(f"        {line}" for line in completed),
        "except Exception as raw_error:",
        f"    executor.handle_field_error(raw_error, F{index}.return_type, F{index}.details,"
        " field_path)",
        f"    results[{key}] = None",
    ]


def _inlined(
    field: FieldPlan, index: int, executor: AnyExecutor, names: dict[str, Any]
) -> tuple[str | None, list[str]] | None:
    """Lines that complete the object `value` of `field` in place, when its plan holds
    only leaves its object has as attributes (an edge's `source { id }`, a node's
    `agent { id name }`): its own compiled function's lines, run without calling it,
    `_complete_object` or `plan`; with the condition on the object's class under
    which they may run: that `is_type_of` accepted its class before
    (`ObjectPlan.accepted`; None: the type has no `is_type_of`). None: not inlined."""
    try:
        plan = field.shape.plan(executor)  # type: ignore[attr-defined]
    except Exception:  # completing the field reports it, as before
        return None
    if not plan.fields or any(f.mode not in (LEAF, TYPENAME) for f in plan.fields):
        return None
    check = None
    if plan.is_type_of is not None:
        if plan.accepted is None:
            return None
        names[f"A{index}"] = plan.accepted
        check = f"type(value) in A{index} and not hasattr(value, CAST)"
    lines = ["child = value", "inner = {}"]
    for position, inner in enumerate(plan.fields):
        prefix = f"{index}_{position}"
        names[f"F{prefix}"] = inner
        if inner.mode == TYPENAME:
            lines.append(f"inner[{inner.key!r}] = {inner.parent_name!r}")
        else:
            lines += _leaf(inner, prefix, names, source="child", results="inner", path="field_path")
    lines.append(f"results[{field.key!r}] = inner")
    return check, lines


def attribute_read(field: FieldPlan, source: str = "source") -> str:
    """Python that reads `field`'s attribute of the object named `source`."""
    attribute = field.attribute
    assert attribute is not None
    if attribute.isidentifier() and not keyword.iskeyword(attribute):
        return f"{source}.{attribute}"
    return f"getattr({source}, {attribute!r})"


def _leaf(
    field: FieldPlan,
    index: int | str,
    names: dict[str, Any],
    *,
    source: str = "source",
    results: str = "results",
    path: str = "path",
) -> list[str]:
    """Lines that read and serialize a leaf of `source` into `results` (names of the
    function's variables: an inlined object's are not its parent's)."""
    assert isinstance(field.shape, LeafShape)
    key = repr(field.key)
    read = attribute_read(field, source)
    value = serialized_value(field, f"S{index}", names)
    if field.non_null:
        on_null = f"raise TypeError(F{index}.null_message)"
    else:
        on_null = f"{results}[{key}] = None"
    return [
        "try:",
        f"    value = {read}",
        "    if value is None or value is Undefined:",
        f"        {on_null}",
        "    else:",
        f"        {results}[{key}] = {value}",
        "except Exception as raw_error:",
        f"    executor.handle_field_error(raw_error, F{index}.return_type, F{index}.details,"
        f" Path({path}, {key}, {field.parent_name!r}))",
        f"    {results}[{key}] = None",
    ]


def serialized_value(field: FieldPlan, serializer: str, names: dict[str, Any]) -> str:
    """Python for the leaf `value` serialized as `field` serializes it: an enum's name
    by member identity, a builtin scalar's type check inline, else the serializer's
    call. `names` gets what the expression names (`serializer` among them)."""
    assert isinstance(field.shape, LeafShape)
    names[serializer] = field.serialize
    leaf_type = field.shape.graphql_type
    leaf_type = getattr(leaf_type, "of_type", leaf_type) if field.non_null else leaf_type
    enum_names = ENUM_NAMES.get(field.serialize)  # type: ignore[arg-type]
    if enum_names is not None:
        names[f"E_{serializer}"] = enum_names
        return f"E_{serializer}.get(id(value)) or {serializer}(value)"
    return _inline_serialization(leaf_type, serializer)


def _inline_serialization(leaf_type: Any, serializer: str) -> str:
    """The serializer's fast path inlined; its own call for everything else."""
    builtin = {
        GraphQLString: "type(value) is str",
        GraphQLID: "type(value) is str",
        GraphQLBoolean: "type(value) is bool",
        GraphQLInt: "type(value) is int and MIN <= value <= MAX",
    }
    check = builtin.get(leaf_type)
    if check is None or leaf_type.coerce_output_value is not builtin_coercion(leaf_type):
        return f"{serializer}(value)"
    return f"value if {check} else {serializer}(value)"
