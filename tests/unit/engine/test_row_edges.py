"""Edges over rows (`RowEdges`) answer on the planned executor exactly as graphql-core's
executor answers over the objects they stand for; when the selection allows, without
making those objects at all."""

from __future__ import annotations

from enum import Enum
from typing import Any

import pytest
import strawberry

from gateway.engine import planned_execution_context
from schema.rows import ColumnField, RowEdges, RowReaders
from tests.support.executors import assert_same_answer

_new = object.__new__


@strawberry.enum
class Shade(Enum):
    LIGHT = "light"
    DARK = "dark"


@strawberry.type
class Item:
    id: strawberry.ID
    title: str
    rank: int
    note: str | None
    shade: Shade
    tone: Shade


@strawberry.type
class ItemEdge:
    cursor: str
    node: Item


COLUMNS = {
    "title": ColumnField("title", "title"),
    "rank": ColumnField("rank", "rank"),
    "note": ColumnField("note", "note"),
    # By a mapping, as the schema's enum columns: the rows go straight to the name.
    "shade": ColumnField("shade", "shade", {shade.value: shade for shade in Shade}),
    # By a function: the value is converted, then serialized.
    "tone": ColumnField("tone", "shade", lambda value: Shade(value)),
}
READERS = RowReaders(Item, COLUMNS)
# What the store read: (id, then the selected columns in the reader's order).
ROWS: dict[str, list[tuple[Any, ...]]] = {}
MADE: list[RowEdges] = []


def _edges(items: list[Item]) -> list[ItemEdge]:
    edges = []
    for item in items:
        edge: ItemEdge = _new(ItemEdge)
        edge.__dict__ = {"cursor": item.id, "node": item}
        edges.append(edge)
    return edges


def _rows(reader: Any, table: str) -> list[tuple[Any, ...]]:
    by_column = [
        dict(zip(("id", "title", "rank", "note", "shade"), row, strict=True)) for row in ROWS[table]
    ]
    for row in by_column:
        row["tone"] = row["shade"]
    return [tuple(row[column] for column in reader.columns) for row in by_column]


@strawberry.type
class Query:
    @strawberry.field
    def items(self, names: list[str], table: str = "plain") -> list[ItemEdge]:
        reader = READERS.reader(frozenset(names))
        assert reader is not None
        edges = RowEdges(_rows(reader, table), reader, _edges)
        MADE.append(edges)
        return edges  # type: ignore[return-value]


STOCK = strawberry.Schema(query=Query)
PLANNED = strawberry.Schema(query=Query, execution_context_class=planned_execution_context())

ROWS["plain"] = [
    ("a1", "first", 1, None, "light"),
    ("a2", "second", 2, "noted", "dark"),
]
# A null where the schema says non-null, and an Int the Int type cannot hold.
ROWS["null title"] = [("b1", "ok", 1, None, "light"), ("b2", None, 2, None, "dark")]
ROWS["huge rank"] = [("c1", "ok", 2**40, None, "light")]
# A value the enum's mapping does not have.
ROWS["unknown shade"] = [("d1", "ok", 1, None, "light"), ("d2", "ok", 2, None, "dusk")]


async def _same(query: str, names: list[str], table: str = "plain") -> Any:
    variables = {"names": names, "table": table}
    expected = await STOCK.execute(query, variable_values=variables)
    MADE.clear()
    answered = await PLANNED.execute(query, variable_values=variables)
    assert_same_answer(answered, expected)
    return answered


QUERY = """query($names: [String!]!, $table: String!) { items(names: $names, table: $table) {
  cursor __typename node { id title rank note shade tone __typename } also: node { r: rank } } }"""
NAMES = ["id", "title", "rank", "note", "shade", "tone", "__typename"]


async def test_rows_answer_without_making_objects() -> None:
    answered = await _same(QUERY, NAMES)
    assert answered.data["items"][1] == {
        "cursor": "a2",
        "__typename": "ItemEdge",
        "node": {
            "id": "a2",
            "title": "second",
            "rank": 2,
            "note": "noted",
            "shade": "DARK",
            "tone": "DARK",
            "__typename": "Item",
        },
        "also": {"r": 2},
    }
    [edges] = MADE
    assert edges._edges is None


@pytest.mark.parametrize("table", ["null title", "huge rank"])
async def test_a_row_it_does_not_expect_takes_the_general_path(table: str) -> None:
    answered = await _same(QUERY, NAMES, table)
    assert answered.errors
    [edges] = MADE
    assert edges._edges is not None


async def test_a_value_the_enum_does_not_have_fails_as_on_the_general_path() -> None:
    # The compiled rows give up on it; making the objects fails as it always has.
    answered = await _same(QUERY, NAMES, "unknown shade")
    assert answered.data is None
    assert "dusk" in answered.errors[0].message


async def test_a_field_the_rows_do_not_hold_takes_the_general_path() -> None:
    # `note` is selected but the reader was made without it: the object has no such
    # attribute, and the general path reports it as it always has.
    query = """query($names: [String!]!) { items(names: $names) { node { title note } } }"""
    await _same(query, ["title"])
    [edges] = MADE
    assert edges._edges is not None
