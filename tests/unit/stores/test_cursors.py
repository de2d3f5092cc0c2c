"""Cursors: what a page hands out reads back as the values it was made from, and reads
as it did when each value was written out by hand (cursors clients hold stay valid)."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from asyncpg.pgproto.pgproto import UUID as PgUUID

from stores.errors import InvalidInput
from stores.postgres.pagination import Ordering, SortKey, _decode_values, cursor_for

ORDER = Ordering(
    "TEST",
    (
        SortKey("created_at", "timestamp"),
        SortKey("n", "int"),
        SortKey("title", "text"),
        SortKey("id", "uuid"),
    ),
)


def _by_hand(values: list[object]) -> str:
    """The encoding cursors had when each value was converted in Python first."""
    plain: list[object] = [ORDER.name]
    for value in values:
        if isinstance(value, datetime):
            plain.append(value.isoformat())
        elif isinstance(value, uuid.UUID):
            plain.append(str(value))
        else:
            plain.append(value)
    return base64.urlsafe_b64encode(orjson.dumps(plain)).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "created",
    [
        datetime(2026, 12, 4, 15, 10, 3, 123456, tzinfo=UTC),
        datetime(2026, 12, 4, 15, 10, 3, tzinfo=UTC),
        datetime(2026, 1, 4, 1, 2, 3, 400, tzinfo=timezone(timedelta(hours=2))),
    ],
)
def test_a_cursor_reads_back_and_reads_as_before(created: datetime) -> None:
    # asyncpg's UUID (a subclass of uuid.UUID) is what rows hold.
    row_id = PgUUID(uuid.uuid4().bytes)
    values: list[object] = [created, 7, "title ~~ ünï", row_id]
    cursor = cursor_for(ORDER, values)
    assert cursor == _by_hand(values)
    assert "=" not in cursor and "+" not in cursor and "/" not in cursor
    assert _decode_values(cursor, "after", ORDER) == [created, 7, "title ~~ ünï", row_id]


def test_a_cursor_of_another_ordering_is_refused() -> None:
    other = Ordering("OTHER", ORDER.keys)
    cursor = cursor_for(other, [datetime.now(UTC), 1, "t", uuid.uuid4()])
    with pytest.raises(InvalidInput, match="different ordering"):
        _decode_values(cursor, "after", ORDER)
