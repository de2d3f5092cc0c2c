"""Relay plumbing shared by every type: global ids, page arguments, connections."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, Self, TypeVar
from uuid import UUID

import strawberry
from aiodataloader import DataLoader
from strawberry import relay
from strawberry.relay.utils import to_base64

from resolvers.errors import ClientError, ErrorCode
from schema.rows import NestedPages, RowEdges, RowReader
from schema.selection import selects
from stores.cache.lru import RememberedForShortTexts
from stores.postgres.pagination import Page, PageRequest

NodeT = TypeVar("NodeT", bound=relay.Node)
RecordT = TypeVar("RecordT")


# UUIDs and global ids made lately, by text: clients send the same ids again and
# again (a dashboard's agents), and `UUID` and `GlobalID` parse in Python, each several
# times a cache hit. Both are immutable; a text that does not parse is not kept, nor
# one longer than any id this API makes (`UUID` takes braces, a `urn:uuid:` prefix and
# any number of hyphens).
_KEPT_TEXT_CHARS = 128
_uuid = RememberedForShortTexts(UUID, maxsize=4096, max_chars=_KEPT_TEXT_CHARS)
# `GlobalID.from_id(text)`.
global_id = RememberedForShortTexts(
    relay.GlobalID.from_id, maxsize=4096, max_chars=_KEPT_TEXT_CHARS
)


def decode_id(value: relay.GlobalID | str, type_name: str, *, field: str) -> UUID:
    """The UUID inside a global id of `type_name`, or BAD_USER_INPUT naming `field`."""
    try:
        global_id = value if isinstance(value, relay.GlobalID) else relay.GlobalID.from_id(value)
    except ValueError:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"{value!s} is not a valid id", field=field
        ) from None
    if global_id.type_name != type_name:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT,
            f"{field} must be the id of a {type_name}, not of a {global_id.type_name}",
            field=field,
        )
    try:
        return _uuid(global_id.node_id)
    except ValueError:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"{value!s} is not a valid {type_name} id", field=field
        ) from None


def encode_id(type_name: str, node_id: UUID) -> relay.GlobalID:
    return relay.GlobalID(type_name, str(node_id))


@functools.lru_cache(maxsize=4096)
def id_text(type_name: str, node_id: UUID) -> strawberry.ID:
    """What `str(encode_id(...))` answers (relay's `to_base64`), without the `GlobalID`:
    for an `ID` field made with its object, serialized as it is (a metric series'
    `agentId`)."""
    return strawberry.ID(to_base64(type_name, node_id))


def node_id_field() -> relay.GlobalID:
    """`id` for our node types, in place of relay's `Node.id` resolver: the global id is
    made with the object (`_id=encode_id(...)` in `from_record`), so `id` is a plain
    field, not a resolver call per object (about a tenth of a large page's CPU). One
    field object per class: Strawberry fills in its owner."""
    field: relay.GlobalID = strawberry.field(
        name="id", description="The Globally Unique ID of this object"
    )
    return field


def page_request(
    first: int | None, after: str | None, last: int | None, before: str | None
) -> PageRequest:
    return PageRequest(first=first, after=after, last=last, before=before)


@strawberry.type(description="A page of results with Relay cursors.")
class CountedConnection(relay.Connection[NodeT], Generic[NodeT]):
    total_count: int | None = strawberry.field(
        default=None, description="All matches, across pages; null unless asked for."
    )

    @classmethod
    def from_page(cls, page: Page[RecordT], to_node: Callable[[RecordT], NodeT]) -> Self:
        cursors = page.cursors
        if len(cursors) != len(page.items):
            raise ValueError("a page needs one cursor per item")
        edges = [_page_edge(cursors, at, to_node(item)) for at, item in enumerate(page.items)]
        return cls._of_page(page, edges)

    @classmethod
    def from_rows_page(
        cls,
        page: Page[tuple[Any, ...]],
        reader: RowReader[NodeT],
        nested: NestedPages | None = None,
        *,
        before_made: Callable[[], None] | None = None,
    ) -> Self:
        """`from_page` over rows read for one selection (schema/rows.py): the edges and
        their nodes are made only if asked for (`RowEdges`), `before_made` called first."""
        cursors = page.cursors
        if len(cursors) != len(page.items):
            raise ValueError("a page needs one cursor per item")

        def make_edges(nodes: list[NodeT]) -> list[relay.Edge[NodeT]]:
            if before_made is not None:
                before_made()
            return [_page_edge(cursors, at, node) for at, node in enumerate(nodes)]

        edges = RowEdges(page.items, reader, make_edges, cursors=cursors, nested=nested)
        return cls._of_page(page, edges)  # type: ignore[arg-type]

    @classmethod
    def _of_page(cls, page: Page[Any], edges: list[relay.Edge[NodeT]]) -> Self:
        return cls(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.has_previous_page,
                start_cursor=page.cursors[0] if page.cursors else None,
                end_cursor=page.cursors[-1] if page.cursors else None,
            ),
            total_count=page.total_count,
        )


def edge_of(cursor: str, node: NodeT) -> relay.Edge[NodeT]:
    """`relay.Edge(cursor=..., node=...)` without the dataclass `__init__`'s keyword
    handling: a page makes one per item."""
    edge: relay.Edge[NodeT] = _new(relay.Edge)
    edge.__dict__ = {"cursor": cursor, "node": node}
    return edge


class _PageEdge(relay.Edge[Any]):
    """An edge of a store's page, its cursor read from the page's (encoded on first
    read: few selections ask for every edge's cursor)."""

    def __getattr__(self, name: str) -> Any:
        # Reached only while `cursor` is not yet in the instance dict.
        if name != "cursor":
            raise AttributeError(name)
        cursor = self.__dict__["cursor"] = self._cursors[self._at]
        return cursor


def _page_edge(cursors: Sequence[str], at: int, node: NodeT) -> relay.Edge[NodeT]:
    edge: relay.Edge[NodeT] = _new(_PageEdge)
    edge.__dict__ = {"node": node, "_cursors": cursors, "_at": at}
    return edge


_new = object.__new__


def wants_total(info: strawberry.Info) -> bool:
    """True when the query selected `totalCount`, so the COUNT is only paid for on demand."""
    return selects(info, "totalCount")


async def nodes_by_ids(
    loader: DataLoader[Any, RecordT | None],
    node_ids: Iterable[str],
    to_node: Callable[[RecordT], NodeT],
    columns: tuple[str, ...] | None = None,
) -> list[NodeT | None]:
    """`Node.resolve_nodes` for a type loaded by UUID: None for unknown or malformed ids.
    With `columns`, `loader` takes (id, columns) keys (rows of those columns)."""
    ids = [_uuid_or_none(node_id) for node_id in node_ids]
    known = [i for i in ids if i is not None]
    keys: list[Any] = known if columns is None else [(i, columns) for i in known]
    # One id (`node(id:)`, nearly always): its future alone, without `gather`'s.
    found = [await loader.load(keys[0])] if len(keys) == 1 else await loader.load_many(keys)
    by_id = dict(zip(known, found, strict=True))
    return [
        to_node(record) if i is not None and (record := by_id.get(i)) is not None else None
        for i in ids
    ]


def _uuid_or_none(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None


def require_ids(values: Sequence[relay.GlobalID], type_name: str, *, field: str) -> list[UUID]:
    return [decode_id(value, type_name, field=field) for value in values]
