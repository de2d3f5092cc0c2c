"""Node objects built from rows of the columns a selection shows, not from whole records.

A list of hundreds of tasks or agents that the document asks two or three fields of
need not cost a store record, a Strawberry object with every field filled, a global
id and the decoding of JSON columns per row. When every field a selection asks of a
type is one of its columns (`ColumnField`), the resolver reads just those columns
(one query per store and depth, as before) and a `RowReader` fills an object of the
type with the selected attributes only; the executor reads those attributes as it
reads any object's. A selection with any other field (a resolver, which reads the
object's `record`) takes the whole-record path instead.
"""

from __future__ import annotations

from binascii import b2a_base64
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")


class ColumnField(NamedTuple):
    """A GraphQL field that is a column as it is, or through `convert`."""

    attribute: str
    column: str
    convert: Callable[[Any], Any] | None = None


# Fields no column backs: `id` is the global id, made from the `id` column.
NO_COLUMN_FIELDS = frozenset(("id", "__typename"))
_new = object.__new__


class RowReader(Generic[T]):
    """Builds objects of one type holding the selected fields only, from tuples that
    start with `columns` (`id` first); the global id only when `id` is selected."""

    __slots__ = ("attributes", "cls", "columns", "converted", "global_id", "type_name")

    def __init__(
        self, cls: type[T], type_name: str, fields: Sequence[ColumnField], global_id: bool
    ) -> None:
        self.cls = cls
        self.type_name = type_name
        self.columns = ("id", *(field.column for field in fields))
        # The attribute each column after `id` fills.
        self.attributes = tuple(field.attribute for field in fields)
        self.converted = [(f.attribute, f.convert) for f in fields if f.convert is not None]
        self.global_id = global_id

    def __call__(self, row: Sequence[Any]) -> T:
        values = dict(zip(self.attributes, row[1:], strict=False))
        for attribute, convert in self.converted:
            values[attribute] = convert(values[attribute])
        node_id = values["id"] = str(row[0])
        if self.global_id:
            # What the ID scalar makes of `encode_id(...)` (relay's `to_base64`), made
            # directly.
            text = f"{self.type_name}:{node_id}".encode()
            values["_id"] = b2a_base64(text, newline=False).decode()
        node: T = _new(self.cls)
        vars(node).update(values)
        return node


class RowReaders(Generic[T]):
    """A type's readers by selected field names (None: the selection needs records)."""

    def __init__(
        self, cls: type[T], fields: Mapping[str, ColumnField], *, max_readers: int = 1000
    ) -> None:
        self.cls = cls
        self.type_name = cls.__name__
        self.fields = fields
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
        for name in sorted(names - NO_COLUMN_FIELDS):
            field = self.fields.get(name)
            if field is None:
                return None
            found.append(field)
        return RowReader(self.cls, self.type_name, found, "id" in names)
