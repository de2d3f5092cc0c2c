"""Keyset pagination for Relay's `first/after` and `last/before`; never OFFSET.

A cursor is url-safe base64 of a JSON array: the ordering's name, then the row's
sort-key values, its id last. Pages continue from the cursor's values, so rows
inserted or deleted meanwhile never shift a page, and a deep page costs the same
as the first one. Every list method goes through `fetch_page`.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, TypeVar, overload
from uuid import UUID

import orjson
from asyncpg import Record

from stores.errors import InvalidInput
from stores.postgres.options import PgConnection

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 20

T = TypeVar("T")


def check_page_size(size: int, name: str = "first") -> None:
    """A page size a client asked for: from 0 to MAX_PAGE_SIZE."""
    if not 0 <= size <= MAX_PAGE_SIZE:
        raise InvalidInput(name, f"must be between 0 and {MAX_PAGE_SIZE}, got {size}")


KeyKind = Literal["timestamp", "text", "int", "uuid"]
CursorValue = datetime | str | int | UUID

_CASTS: dict[KeyKind, str] = {
    "timestamp": "timestamptz",
    "text": "text",
    "int": "bigint",
    "uuid": "uuid",
}


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Relay page arguments, checked on construction; `first=20` when neither size is given."""

    first: int | None = None
    after: str | None = None
    last: int | None = None
    before: str | None = None

    def __post_init__(self) -> None:
        if self.first is not None and self.last is not None:
            raise InvalidInput("last", "give `first` or `last`, not both")
        for name, size in (("first", self.first), ("last", self.last)):
            if size is not None:
                check_page_size(size, name)
        if self.first is None and self.last is None:
            object.__setattr__(self, "first", DEFAULT_PAGE_SIZE)
        for name, cursor in (("after", self.after), ("before", self.before)):
            if cursor is not None:
                _unpack(cursor, name)

    @property
    def backward(self) -> bool:
        return self.last is not None

    @property
    def size(self) -> int:
        size = self.last if self.last is not None else self.first
        assert size is not None
        return size


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of records with one cursor per record."""

    items: list[T]
    cursors: Sequence[str]
    has_next_page: bool
    has_previous_page: bool
    total_count: int | None = None


@dataclass(frozen=True, slots=True)
class SortKey:
    """One column of an ordering. `expression` is trusted SQL from the store, never input."""

    expression: str
    kind: KeyKind


@dataclass(frozen=True, slots=True)
class Ordering:
    """A total order: every key sorts the same way and the last key is the (unique) id.

    One direction for all keys keeps the cursor condition a single row comparison,
    `(a, b, id) > ($1, $2, $3)`, which PostgreSQL answers as one index range.
    """

    name: str
    keys: tuple[SortKey, ...]
    descending: bool = False

    def __post_init__(self) -> None:
        if not self.keys or self.keys[-1].expression != "id":
            raise ValueError(f"ordering {self.name} must end with the id")


def ordering(name: str, *keys: tuple[str, KeyKind], descending: bool = False) -> Ordering:
    return Ordering(name, tuple(SortKey(expr, kind) for expr, kind in keys), descending)


@dataclass
class Params:
    """Collects bind values and hands out their `$n` placeholders, so SQL text never holds one."""

    values: list[object] = field(default_factory=list)

    def __call__(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"

    def any_of(self, column: str, values: Sequence[object], cast: str) -> str:
        """`column` equals one of `values`. A single value is bound as `=`, so an index
        leading with `column` can also return rows already in the page's order."""
        if len(values) == 1:
            return f"{column} = {self(values[0])}::{cast}"
        return f"{column} = ANY({self(list(values))}::{cast}[])"


async def fetch_page(
    conn: PgConnection,
    *,
    select: str,
    source: str,
    where: Sequence[str],
    params: Params,
    order: Ordering,
    page: PageRequest,
    with_total: bool,
    decode: Callable[[Record], T],
) -> Page[T]:
    """Run one page query (with its total in the same statement when asked for).

    `select`, `source` and `where` are SQL from the calling store; every value in
    them is a placeholder from `params`.
    """
    conditions = list(where)
    key_list = ", ".join(key.expression for key in order.keys)
    for cursor, name in ((page.after, "after"), (page.before, "before")):
        if cursor is None:
            continue
        values = _decode_values(cursor, name, order)
        placeholders = ", ".join(
            f"{params(value)}::{_CASTS[key.kind]}"
            for key, value in zip(order.keys, values, strict=True)
        )
        # `after` continues in the ordering's direction, `before` against it.
        greater = (name == "after") != order.descending
        conditions.append(f"({key_list}) {'>' if greater else '<'} ({placeholders})")

    # A backward page is read in reverse, nearest the cursor first, and flipped below.
    reverse = page.backward != order.descending
    direction = "DESC" if reverse else "ASC"
    aliases = [f"_k{i}" for i in range(len(order.keys))]
    key_columns = ", ".join(
        f"{key.expression} AS {alias}" for key, alias in zip(order.keys, aliases, strict=True)
    )
    sql = (
        f"SELECT {select}, {key_columns} FROM {source}"
        f"{_where(conditions)}"
        f" ORDER BY {', '.join(f'{key.expression} {direction}' for key in order.keys)}"
        f" LIMIT {params(page.size + 1)}"
    )
    if with_total:
        # LEFT JOIN so an empty page still brings back its total.
        sql = (
            f"SELECT page.*, total.n AS _total"
            f" FROM (SELECT count(*) AS n FROM {source}{_where(where)}) AS total"
            f" LEFT JOIN LATERAL ({sql}) AS page ON true"
            f" ORDER BY {', '.join(f'page.{alias} {direction}' for alias in aliases)}"
        )

    rows = await conn.fetch(sql, *params.values)
    total: int | None = None
    if with_total:
        total = rows[0]["_total"] if rows else None
        # An empty page comes back as one row of its total alone.
        rows = [row for row in rows if row[aliases[-1]] is not None]
    more = len(rows) > page.size
    rows = rows[: page.size]
    if page.backward:
        rows.reverse()
    return Page(
        items=[decode(row) for row in rows],
        cursors=Cursors(order, rows, aliases),
        # Beyond the cursor we came from there is at least the row it points at.
        has_next_page=page.before is not None if page.backward else more,
        has_previous_page=more if page.backward else page.after is not None,
        total_count=total,
    )


class Cursors(Sequence[str]):
    """A page's cursors, each encoded when read: a selection of a page seldom reads
    more than the first and the last (`pageInfo`), and one costs about a microsecond."""

    __slots__ = ("_aliases", "_order", "_rows")

    def __init__(self, order: Ordering, rows: Sequence[Record], aliases: Sequence[str]) -> None:
        self._order = order
        self._rows = rows
        self._aliases = aliases

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[at] for at in range(*index.indices(len(self)))]
        row = self._rows[index]
        return _encode_cursor(self._order, [row[alias] for alias in self._aliases])


def cursor_for(order: Ordering, values: Sequence[object]) -> str:
    """The cursor of a row with these sort-key values (the id last), for a first page a
    store assembles itself, e.g. one page per parent in one query."""
    return _encode_cursor(order, values)


def _where(conditions: Sequence[str]) -> str:
    return f" WHERE {' AND '.join(conditions)}" if conditions else ""


def _encode_cursor(order: Ordering, values: Sequence[object]) -> str:
    # orjson writes a datetime as `isoformat()` does and a UUID as `str()` does (asyncpg's
    # UUID, a subclass, through `_cursor_value`): one call per cursor, made per row.
    raw = orjson.dumps([order.name, *values], default=_cursor_value)
    return binascii.b2a_base64(raw, newline=False).translate(_URL_SAFE).rstrip(b"=").decode()


_URL_SAFE = bytes.maketrans(b"+/", b"-_")


def _cursor_value(value: object) -> object:
    if isinstance(value, UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a cursor value")


def _unpack(cursor: str, name: str) -> list[object]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value = orjson.loads(raw)
    except (binascii.Error, ValueError):
        value = None
    if not isinstance(value, list) or len(value) < 2 or not isinstance(value[0], str):
        raise InvalidInput(
            name, "is not a cursor from this API; pass a cursor from a previous page's pageInfo"
        )
    return value


def _decode_values(cursor: str, name: str, order: Ordering) -> list[CursorValue]:
    tag, *raw = _unpack(cursor, name)
    if tag != order.name or len(raw) != len(order.keys):
        raise InvalidInput(
            name, "this cursor comes from a different ordering; start again without a cursor"
        )
    try:
        return [_decode_value(key.kind, value) for key, value in zip(order.keys, raw, strict=True)]
    except (TypeError, ValueError):
        raise InvalidInput(
            name, "is not a cursor from this API; pass a cursor from a previous page's pageInfo"
        ) from None


def _decode_value(kind: KeyKind, value: object) -> CursorValue:
    if kind == "int" and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if kind == "text":
            return value
        if kind == "uuid":
            return UUID(value)
        if kind == "timestamp":
            return datetime.fromisoformat(value)
    raise TypeError(f"cursor value {value!r} is not a {kind}")
