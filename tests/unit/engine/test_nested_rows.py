"""A connection field read with its parents' rows (`NestedPages`: a page of agents and
each agent's `tasks`) answers on the planned executor exactly as graphql-core's
executor answers through the field's resolver; when the selection allows, without
making the parents, their edges or the nested connections at all."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import strawberry

from gateway.engine import planned_execution_context
from schema.rows import ColumnField, NestedPages, RowEdges, RowReader, RowReaders
from schema.settled import settled_by
from tests.support.executors import assert_same_answer

_new = object.__new__


class PartsPage(NamedTuple):
    """One parent's page, as the store reads it with the parent's row."""

    items: list[tuple[Any, ...]]
    total: int | None
    has_more: bool


# Each parent's page of parts, by parent id: what "the parents' statement" read.
PAGES: dict[str, PartsPage] = {}
# The parents' edges as the resolver made them, and the parts' resolver calls.
MADE: list[RowEdges] = []
CALLS: list[str] = []


@strawberry.type
class Part:
    id: strawberry.ID
    label: str


@strawberry.type
class PartEdge:
    cursor: str
    node: Part


@strawberry.type
class PartConnection:
    edges: list[PartEdge]
    total_count: int | None
    # Not answered from rows: asking for it takes the general path.
    note: str


PART_READERS = RowReaders(Part, {"label": ColumnField("label", "label")})


def _part_reader() -> RowReader[Part]:
    reader = PART_READERS.reader(frozenset({"id", "label"}))
    assert reader is not None
    return reader


PART_READER = _part_reader()


def _part_edges(parts: list[Part]) -> list[PartEdge]:
    edges = []
    for part in parts:
        edge: PartEdge = _new(PartEdge)
        edge.__dict__ = {"cursor": part.id, "node": part}
        edges.append(edge)
    return edges


def _connection(page: PartsPage) -> PartConnection:
    connection: PartConnection = _new(PartConnection)
    connection.__dict__ = {
        "edges": RowEdges(page.items, PART_READER, _part_edges),
        "total_count": page.total,
        "note": "parts",
    }
    return connection


def _settled_parts(
    context: Any, nodes: list[Any], fragments: Mapping[str, Any], arguments: Mapping[str, Any]
) -> Callable[[Item], PartConnection | None]:
    def parts_of(item: Item) -> PartConnection | None:
        page = PAGES.get(item.id)
        return None if page is None else _connection(page)

    return parts_of


@strawberry.type
class Item:
    id: strawberry.ID
    title: str

    @strawberry.field
    @settled_by(_settled_parts)
    def parts(self, first: int = 2) -> PartConnection:
        CALLS.append(self.id)
        return _connection(PAGES[self.id])


@strawberry.type
class ItemEdge:
    cursor: str
    node: Item


# `parts` reads nothing of an item's record but its id, as `Agent.tasks`.
ITEM_READERS = RowReaders(
    Item, {"title": ColumnField("title", "title")}, record_fields=frozenset({"parts"})
)
ITEMS = [("i1", "first"), ("i2", "second")]


@strawberry.type
class Query:
    @strawberry.field
    def items(self, names: list[str], paged: bool = False) -> list[ItemEdge]:
        reader = ITEM_READERS.reader(frozenset(names))
        assert reader is not None
        # As a store page's cursors are: not the rows' ids.
        cursors = [f"cursor-{row[0]}" for row in ITEMS] if paged else None

        def make_edges(items: list[Item]) -> list[ItemEdge]:
            edges = []
            for at, item in enumerate(items):
                edge: ItemEdge = _new(ItemEdge)
                edge.__dict__ = {"cursor": cursors[at] if cursors else item.id, "node": item}
                edges.append(edge)
            return edges

        nested = NestedPages("parts", PART_READER, [PAGES[row[0]] for row in ITEMS])
        edges = RowEdges(ITEMS, reader, make_edges, cursors=cursors, nested=nested)
        MADE.append(edges)
        return edges  # type: ignore[return-value]


STOCK = strawberry.Schema(query=Query)
PLANNED = strawberry.Schema(query=Query, execution_context_class=planned_execution_context())
NAMES = ["id", "title", "parts", "__typename"]


def _pages(second_label: str | None = "bolt") -> None:
    PAGES.clear()
    PAGES["i1"] = PartsPage([("p1", "nut"), ("p2", second_label)], 3, True)
    PAGES["i2"] = PartsPage([], 0, False)


async def _same(query: str, paged: bool = False) -> Any:
    variables = {"names": NAMES, "paged": paged}
    expected = await STOCK.execute(query, variable_values=variables)
    MADE.clear()
    CALLS.clear()
    answered = await PLANNED.execute(query, variable_values=variables)
    assert_same_answer(answered, expected)
    return answered


QUERY = """query($names: [String!]!, $paged: Boolean!) { items(names: $names, paged: $paged) {
  node { id title __typename bits: parts(first: 2) {
    __typename count: totalCount edges { cursor node { id label __typename } } } } } }"""


async def test_nested_pages_answer_without_making_any_object() -> None:
    _pages()
    answered = await _same(QUERY)
    assert answered.data["items"][0]["node"]["bits"] == {
        "__typename": "PartConnection",
        "count": 3,
        "edges": [
            {"cursor": "p1", "node": {"id": "p1", "label": "nut", "__typename": "Part"}},
            {"cursor": "p2", "node": {"id": "p2", "label": "bolt", "__typename": "Part"}},
        ],
    }
    assert answered.data["items"][1]["node"]["bits"]["edges"] == []
    [edges] = MADE
    assert edges._edges is None
    assert CALLS == []


async def test_a_null_in_a_nested_row_takes_the_general_path() -> None:
    _pages(second_label=None)
    answered = await _same(QUERY)
    assert answered.errors
    [edges] = MADE
    assert edges._edges is not None


async def test_a_nested_field_the_rows_do_not_answer_takes_the_general_path() -> None:
    _pages()
    query = """query($names: [String!]!) { items(names: $names) {
      node { title parts { note edges { node { label } } } } } }"""
    await _same(query)
    [edges] = MADE
    assert edges._edges is not None


async def test_an_edge_cursor_of_a_store_page_takes_the_general_path() -> None:
    _pages()
    query = """query($names: [String!]!, $paged: Boolean!) { items(names: $names, paged: $paged) {
      cursor node { title parts { edges { node { label } } } } } }"""
    answered = await _same(query, paged=True)
    assert answered.data["items"][1]["cursor"] == "cursor-i2"
    [edges] = MADE
    assert edges._edges is not None
    # Without the cursor, the same page completes from its rows.
    await _same(query.replace("cursor node", "node"), paged=True)
    [edges] = MADE
    assert edges._edges is None
