"""What a query selected below the field being resolved.

Parents that can fetch their children's data in one step look here first, so a
query that does not ask for a nested object pays nothing for it, and one that
does gets it without an async resolver per item.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

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

V = TypeVar("V")


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

    def names() -> frozenset[str]:
        found: dict[str, list[FieldNode]] = {}
        for node in nodes:
            _collect_fields(node.selection_set, path, fragments, found)
        return frozenset(field.name.value for fields in found.values() for field in fields)

    return _NAMES.get(nodes, path, names)


def reads_variables(node: FieldNode) -> bool:
    """Whether the field's arguments read a variable (if not, they are the same for
    every request of its document)."""
    return any(has_variable(argument.value) for argument in node.arguments or ())


def has_variable(value: ValueNode) -> bool:
    """Whether the value is a variable or holds one."""
    if isinstance(value, VariableNode):
        return True
    if isinstance(value, ListValueNode):
        return any(has_variable(item) for item in value.values)
    if isinstance(value, ObjectValueNode):
        return any(has_variable(field.value) for field in value.fields)
    return False


class DocumentMemo(Generic[V]):
    """Answers worked out from a document's field nodes, kept across requests: the
    parser cache hands every request with the same text the same nodes, so their
    identity is the key. Each entry holds its nodes, so no other node takes their ids
    while it is kept; a full memo is cleared whole."""

    __slots__ = ("_entries", "_max_entries")

    def __init__(self, max_entries: int = 2000) -> None:
        self._entries: dict[tuple[object, ...], tuple[list[FieldNode], V]] = {}
        self._max_entries = max_entries

    def get(self, nodes: Sequence[FieldNode], extra: tuple[str, ...], make: Callable[[], V]) -> V:
        """The answer for `nodes` (and `extra`, say a path below them), `make` run once."""
        key = (*map(id, nodes), *extra)
        entry = self._entries.get(key)
        if entry is not None:
            return entry[1]
        value = make()
        if len(self._entries) >= self._max_entries:
            self._entries.clear()
        self._entries[key] = (list(nodes), value)
        return value


_NAMES: DocumentMemo[frozenset[str]] = DocumentMemo()


def selected_fields(info: strawberry.Info, *path: str) -> dict[str, list[FieldNode]]:
    """The field nodes selected at `path` below the current field, by response key
    (through fragments, whatever their type condition or directives: a superset), e.g.
    `selected_fields(info, "edges", "node")["tasks"]`. Worked out once per document."""
    raw = info._raw_info

    def fields() -> dict[str, list[FieldNode]]:
        found: dict[str, list[FieldNode]] = {}
        for node in raw.field_nodes:
            _collect_fields(node.selection_set, path, raw.fragments, found)
        return found

    return _FIELDS.get(raw.field_nodes, path, fields)


_FIELDS: DocumentMemo[dict[str, list[FieldNode]]] = DocumentMemo()


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
