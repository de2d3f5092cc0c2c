"""What a query selected below the field being resolved.

Parents that can fetch their children's data in one step look here first, so a
query that does not ask for a nested object pays nothing for it, and one that
does gets it without an async resolver per item.
"""

from __future__ import annotations

from collections.abc import Iterable

import strawberry
from strawberry.types.nodes import FragmentSpread, InlineFragment, SelectedField, Selection


def selects(info: strawberry.Info, *path: str) -> bool:
    """True when the current field selects `path` (GraphQL names, fragments included),
    e.g. `selects(info, "nodes", "agent")`."""
    # `selected_fields` holds the current field itself; its selections are the children.
    return any(_selects(field.selections, path) for field in info.selected_fields)


def _selects(selections: Iterable[Selection], path: tuple[str, ...]) -> bool:
    if not path:
        return True
    head, rest = path[0], path[1:]
    for selection in selections:
        if isinstance(selection, SelectedField):
            if selection.name == head and _selects(selection.selections, rest):
                return True
        elif isinstance(selection, FragmentSpread | InlineFragment) and _selects(
            selection.selections, path
        ):
            return True
    return False
