"""What a query selected below the field being resolved.

Parents that can fetch their children's data in one step look here first, so a
query that does not ask for a nested object pays nothing for it, and one that
does gets it without an async resolver per item.
"""

from __future__ import annotations

from collections.abc import Mapping

import strawberry
from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    ListValueNode,
    ObjectValueNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
)


def selects(info: strawberry.Info, *path: str) -> bool:
    """True when the current field selects `path` (GraphQL field names, through
    fragments), e.g. `selects(info, "nodes", "agent")`."""
    # graphql-core's AST, not `info.selected_fields`: that converts every argument and
    # directive below the field, once per parent object (50 times for a page of agents).
    raw = info._raw_info
    return any(_selects(node.selection_set, path, raw.fragments) for node in raw.field_nodes)


def selected_names(info: strawberry.Info, *path: str) -> frozenset[str]:
    """The field names selected at `path` below the current field (through fragments,
    whatever their type condition or directives: a superset of what the response shows),
    e.g. `selected_names(info, "edges", "node")`. Worked out once per document."""
    raw = info._raw_info
    return names_below(raw.field_nodes, raw.fragments, *path)


def names_below(
    nodes: list[FieldNode], fragments: Mapping[str, FragmentDefinitionNode], *path: str
) -> frozenset[str]:
    """`selected_names` for field nodes other than the current field's (`fragments`:
    their document's). Worked out once per document."""
    key = (*map(id, nodes), *path)
    cached = _NAMES.get(key)
    if cached is not None:
        return cached[1]
    found: dict[str, list[FieldNode]] = {}
    for node in nodes:
        _collect_fields(node.selection_set, path, fragments, found)
    names = frozenset(field.name.value for fields in found.values() for field in fields)
    if len(_NAMES) >= _MAX_NAMES:
        _NAMES.clear()
    # The entry holds the field nodes, so no other node takes their ids while it is
    # cached: a key found is the same nodes, of the same document.
    _NAMES[key] = (list(nodes), names)
    return names


def reads_variables(node: FieldNode) -> bool:
    """Whether the field's arguments read a variable (if not, they are the same for
    every request of its document)."""
    return any(_has_variable(argument.value) for argument in node.arguments or ())


def _has_variable(value: ValueNode) -> bool:
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(_has_variable(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return any(_has_variable(field.value) for field in value.fields)
    return False


_NAMES: dict[tuple[object, ...], tuple[list[FieldNode], frozenset[str]]] = {}
_MAX_NAMES = 2000


def selected_fields(info: strawberry.Info, *path: str) -> dict[str, list[FieldNode]]:
    """The field nodes selected at `path` below the current field, by response key
    (through fragments, whatever their type condition or directives: a superset), e.g.
    `selected_fields(info, "edges", "node")["tasks"]`. Worked out once per document."""
    raw = info._raw_info
    nodes = raw.field_nodes
    key = (*map(id, nodes), *path)
    cached = _FIELDS.get(key)
    if cached is not None:
        return cached[1]
    found: dict[str, list[FieldNode]] = {}
    for node in nodes:
        _collect_fields(node.selection_set, path, raw.fragments, found)
    if len(_FIELDS) >= _MAX_NAMES:
        _FIELDS.clear()
    # Held with the field nodes, as in `selected_names`.
    _FIELDS[key] = (list(nodes), found)
    return found


_FIELDS: dict[tuple[object, ...], tuple[list[FieldNode], dict[str, list[FieldNode]]]] = {}


def _collect_fields(
    selection_set: SelectionSetNode | None,
    path: tuple[str, ...],
    fragments: Mapping[str, FragmentDefinitionNode],
    found: dict[str, list[FieldNode]],
) -> None:
    if selection_set is None:
        return
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if not path:
                key = selection.alias.value if selection.alias else selection.name.value
                found.setdefault(key, []).append(selection)
            elif selection.name.value == path[0]:
                _collect_fields(selection.selection_set, path[1:], fragments, found)
        elif isinstance(selection, InlineFragmentNode):
            _collect_fields(selection.selection_set, path, fragments, found)
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None:
                _collect_fields(fragment.selection_set, path, fragments, found)


def _selects(
    selection_set: SelectionSetNode | None,
    path: tuple[str, ...],
    fragments: Mapping[str, FragmentDefinitionNode],
) -> bool:
    if not path:
        return True
    if selection_set is None:
        return False
    for selection in selection_set.selections:
        if isinstance(selection, FieldNode):
            if selection.name.value == path[0] and _selects(
                selection.selection_set, path[1:], fragments
            ):
                return True
        elif isinstance(selection, InlineFragmentNode):
            if _selects(selection.selection_set, path, fragments):
                return True
        elif isinstance(selection, FragmentSpreadNode):
            fragment = fragments.get(selection.name.value)
            if fragment is not None and _selects(fragment.selection_set, path, fragments):
                return True
    return False
