"""A document's shape, measured on the syntax tree before validation: depth, fields,
aliases and root fields, with fragments expanded and introspection fields counted
like any other.

Each fragment is measured once and its figures reused wherever it is spread, so a
document that spreads fragments into each other (a "fragment bomb", whose expanded
size doubles with every level) costs a walk of its text, not of its expansion.
"""

from __future__ import annotations

from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
)


@dataclass(frozen=True, slots=True)
class Shape:
    """What a selection set expands to: its deepest chain of fields, all fields in
    it, the aliased ones, and the fields at its own level."""

    depth: int = 0
    fields: int = 0
    aliases: int = 0
    top_fields: int = 0

    def __add__(self, other: Shape) -> Shape:
        return Shape(
            max(self.depth, other.depth),
            self.fields + other.fields,
            self.aliases + other.aliases,
            self.top_fields + other.top_fields,
        )


@dataclass(frozen=True, slots=True)
class DocumentShape:
    depth: int
    fields: int
    aliases: int
    root_fields: int


_EMPTY = Shape()


def measure(document: DocumentNode) -> DocumentShape:
    """The largest depth and root fields of any operation; fields and aliases summed
    over all of them (every operation in a document is validated)."""
    walker = _Walker(document)
    operations = [
        walker.selection_set(definition.selection_set)
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    ]
    return DocumentShape(
        depth=max((shape.depth for shape in operations), default=0),
        fields=sum(shape.fields for shape in operations),
        aliases=sum(shape.aliases for shape in operations),
        root_fields=max((shape.top_fields for shape in operations), default=0),
    )


class _Walker:
    def __init__(self, document: DocumentNode) -> None:
        self._fragments = {
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        }
        self._measured: dict[str, Shape] = {}
        self._entered: set[str] = set()

    def selection_set(self, selection_set: SelectionSetNode | None) -> Shape:
        total = _EMPTY
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                inner = self.selection_set(selection.selection_set)
                total += Shape(
                    depth=1 + inner.depth,
                    fields=1 + inner.fields,
                    aliases=(1 if selection.alias else 0) + inner.aliases,
                    top_fields=1,
                )
            elif isinstance(selection, InlineFragmentNode):
                total += self.selection_set(selection.selection_set)
            elif isinstance(selection, FragmentSpreadNode):
                total += self._fragment(selection.name.value)
        return total

    def _fragment(self, name: str) -> Shape:
        if name in self._measured:
            return self._measured[name]
        definition = self._fragments.get(name)
        # Unknown fragments and cycles are validation errors; they add nothing here.
        if definition is None or name in self._entered:
            return _EMPTY
        self._entered.add(name)
        shape = self.selection_set(definition.selection_set)
        self._entered.discard(name)
        self._measured[name] = shape
        return shape
