"""Node objects built from rows of the columns a selection shows, not from whole records.

A list of hundreds of tasks or agents that the document asks two or three fields of
need not cost a store record, a Strawberry object with every field filled, a global
id and the decoding of JSON columns per row. When every field a selection asks of a
type is one of its columns (`ColumnField`), the resolver reads just those columns
(one query per store and depth, as before) and a `RowReader` fills an object of the
type with the selected attributes only; the executor reads those attributes as it
reads any object's. A resolver field that reads nothing of the object's `record` but
its id (a type's `record_fields`) gets a `RecordId` as the record; a selection with
any other field takes the whole-record path instead.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar, overload

from stores.postgres.records import ColumnRow

T = TypeVar("T")


class ColumnField(NamedTuple):
    """A GraphQL field that is a column as it is, or through `convert`: a function, or
    a mapping from the column's values (an enum's, subscripted inline: no call)."""

    attribute: str
    column: str
    convert: Callable[[Any], Any] | Mapping[Any, Any] | None = None


# Fields no column backs: `id` is the global id, made from the `id` column.
NO_COLUMN_FIELDS = frozenset(("id", "__typename"))
_new = object.__new__


class RecordId(NamedTuple):
    """What a row object holds as its `record`: the id alone, all that the resolver
    fields a type lists as `record_fields` read of it (`self.record.id`)."""

    id: Any


class RowReader(Generic[T]):
    """Builds objects of one type holding the selected fields only, from tuples that
    start with `columns` (`id` first); the global id only when `id` is selected.
    `read(row)` is one function made for the selection: a dict display of the row's
    values, the converters called inline."""

    __slots__ = ("cls", "columns", "fields", "global_id", "read", "type_name")

    def __init__(
        self,
        cls: type[T],
        type_name: str,
        fields: Sequence[ColumnField],
        global_id: bool,
        *,
        record_id: bool = False,
    ) -> None:
        self.cls = cls
        self.type_name = type_name
        self.fields = tuple(fields)
        self.global_id = global_id
        self.columns = ("id", *(field.column for field in fields))
        self.read: Callable[[ColumnRow], T] = _compile_reader(
            cls, type_name, fields, global_id, record_id
        )

    def __call__(self, row: ColumnRow) -> T:
        return self.read(row)

    def enum_column(self, attribute: str) -> tuple[int, Mapping[Any, Any]] | None:
        """Where the row holds the field `attribute` and its mapping from the column's
        values, when a mapping converts it (an enum's members by value)."""
        for index, field in enumerate(self.fields, start=1):
            if field.attribute == attribute and isinstance(field.convert, Mapping):
                return index, field.convert
        return None

    def held(self, names: dict[str, Any]) -> dict[str, str]:
        """What `read` puts in an object, by attribute, as Python over `row` and
        `node_id` (`str(row[0])`); `names` gets what those expressions call."""
        return _held(self.type_name, self.fields, self.global_id, names)


def _held(
    type_name: str, fields: Sequence[ColumnField], global_id: bool, names: dict[str, Any]
) -> dict[str, str]:
    held: dict[str, str] = {}
    for index, field in enumerate(fields, start=1):
        if field.convert is None:
            held[field.attribute] = f"row[{index}]"
        elif isinstance(field.convert, Mapping):
            names[f"convert{index}"] = field.convert
            held[field.attribute] = f"convert{index}[row[{index}]]"
        else:
            names[f"convert{index}"] = field.convert
            held[field.attribute] = f"convert{index}(row[{index}])"
    held["id"] = "node_id"
    if global_id:
        # What the ID scalar makes of `encode_id(...)` (relay's `to_base64`), directly.
        names["b2a_base64"] = b2a_base64
        prefix = repr(f"{type_name}:")
        held["_id"] = f"b2a_base64(({prefix} + node_id).encode(), newline=False).decode()"
    return held


class NestedPages(NamedTuple):
    """One connection field of each row's node, read in the rows' own statement (a page
    of agents and each agent's `tasks`): the field's name, how its edges' rows read,
    and each row's page, in the rows' order: its rows (`items`), whether there are
    more (`has_more`) and, when asked for, how many in all (`total`)."""

    field_name: str
    reader: RowReader[Any]
    pages: Sequence[Any]


class RowEdges(Sequence[Any]):
    """A connection's edges over rows read for one selection: each edge (and its node,
    by `reader`) is made when first asked for, so graphql-core's executor iterates
    them as it iterates any list, while the planned executor can complete the rows
    themselves into the response when the selection allows it
    (gateway/engine/rows.py) and never make them.

    `make_edges` makes the edges of the nodes, in order. `cursors`, when given, are the
    edges' cursors; otherwise a row's cursor is its id. `nested`: a connection field of
    the nodes read with the rows, which the nodes' own resolver answers from what was
    settled for it, and the planned executor from the pages themselves."""

    __slots__ = ("_edges", "cursors", "make_edges", "nested", "reader", "rows")

    def __init__(
        self,
        rows: Sequence[ColumnRow],
        reader: RowReader[Any],
        make_edges: Callable[[list[Any]], list[Any]],
        *,
        cursors: Sequence[str] | None = None,
        nested: NestedPages | None = None,
    ) -> None:
        self.rows = rows
        self.reader = reader
        self.make_edges = make_edges
        self.cursors = cursors
        self.nested = nested
        self._edges: list[Any] | None = None

    def _made(self) -> list[Any]:
        edges = self._edges
        if edges is None:
            read = self.reader.read
            edges = self._edges = self.make_edges([read(row) for row in self.rows])
        return edges

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        return self._made()[index]

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._made())


def _compile_reader(
    cls: type[T], type_name: str, fields: Sequence[ColumnField], global_id: bool, record_id: bool
) -> Callable[[ColumnRow], T]:
    names: dict[str, Any] = {
        "new": _new,
        "RecordId": RecordId,
        "new_tuple": tuple.__new__,
        "cls": cls,
    }
    for field in fields:
        if not field.attribute.isidentifier():
            raise ValueError(f"not an attribute name: {field.attribute!r}")
    held = _held(type_name, fields, global_id, names)
    values = [f"{attribute!r}: {expression}," for attribute, expression in held.items()]
    if record_id:
        values.append("'record': new_tuple(RecordId, (row[0],)),")
    lines = [
        "def read(row):",
        "    node_id = str(row[0])",
        "    node = new(cls)",
        "    node.__dict__ = {",
        *(f"        {value}" for value in values),
        "    }",
        "    return node",
    ]
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<rows {type_name}>", "exec"), names, namespace)
    read: Callable[[ColumnRow], T] = namespace["read"]
    return read


class RowReaders(Generic[T]):
    """A type's readers by selected field names (None: the selection needs records)."""

    def __init__(
        self,
        cls: type[T],
        fields: Mapping[str, ColumnField],
        *,
        record_fields: frozenset[str] = frozenset(),
        max_readers: int = 1000,
    ) -> None:
        self.cls = cls
        self.type_name = cls.__name__
        self.fields = fields
        # Resolver fields that read nothing of `record` but its id (`RecordId`).
        self.record_fields = record_fields
        self.max_readers = max_readers
        self._readers: dict[frozenset[str], RowReader[T] | None] = {}

    def reader(self, names: frozenset[str]) -> RowReader[T] | None:
        try:
            return self._readers[names]
        except KeyError:
            pass
        if len(self._readers) >= self.max_readers:
            self._readers.clear()
        reader = self._readers[names] = self._build(names)
        return reader

    def _build(self, names: frozenset[str]) -> RowReader[T] | None:
        found = []
        record_id = False
        for name in sorted(names - NO_COLUMN_FIELDS):
            field = self.fields.get(name)
            if field is not None:
                found.append(field)
            elif name in self.record_fields:
                record_id = True
            else:
                return None
        return RowReader(self.cls, self.type_name, found, "id" in names, record_id=record_id)
