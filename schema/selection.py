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
    SelectionSetNode,
)


def selects(info: strawberry.Info, *path: str) -> bool:
    """True when the current field selects `path` (GraphQL field names, through
    fragments), e.g. `selects(info, "nodes", "agent")`."""
    # graphql-core's AST, not `info.selected_fields`: that converts every argument and
    # directive below the field, once per parent object (50 times for a page of agents).
    raw = info._raw_info
    return any(_selects(node.selection_set, path, raw.fragments) for node in raw.field_nodes)


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
