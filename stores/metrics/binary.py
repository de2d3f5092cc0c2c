"""PostgreSQL's binary COPY format, written with numpy for bulk loaders.

asyncpg encodes COPY records one Python tuple at a time; for millions of points
that costs more client CPU than the server spends storing them (on a two-core
machine they compete). A loader that has its values in arrays can have whole
columns laid out here instead, at a few nanoseconds a byte.

Rows are fixed-width big-endian fields followed by one text field taken from a
short list (metric names): the text goes last, so every other field sits at the
same offset in every row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt

from stores.metrics.records import CopyData

_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, no header extension
_TRAILER = b"\xff\xff"
_PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def timestamps(moments: Sequence[datetime]) -> npt.NDArray[np.int64]:
    """`timestamptz` values: microseconds since 2000-01-01 UTC."""
    step = timedelta(microseconds=1)
    return np.array([(moment - _PG_EPOCH) // step for moment in moments], dtype=np.int64)


def uuids(values: Sequence[UUID]) -> npt.NDArray[np.uint8]:
    """`uuid` values: 16 bytes each, one row per value."""
    return np.frombuffer(b"".join(v.bytes for v in values), np.uint8).reshape(len(values), 16)


def encode(
    columns: Sequence[str],
    fields: Sequence[npt.NDArray[Any]],
    texts: Sequence[str],
    text_of_row: npt.NDArray[np.intp],
) -> CopyData:
    """One row per entry of `text_of_row`: the `fields` (int64, float64, or uint8 rows of
    bytes; one row each), then `texts[text_of_row[i]]`. `columns` names the fields and
    the text column, in that order."""
    rows = len(text_of_row)
    cells = [_bytes_of(field, rows) for field in fields]
    encoded = [text.encode() for text in texts]
    fixed = 2 + sum(4 + cell.shape[1] for cell in cells) + 4
    text_sizes = np.array([len(text) for text in encoded], dtype=np.int64)
    sizes = fixed + text_sizes[text_of_row]
    starts = np.empty(rows, dtype=np.int64)
    starts[0:1] = len(_HEADER)
    np.cumsum(sizes[:-1], out=starts[1:])
    starts[1:] += len(_HEADER)
    total = len(_HEADER) + int(sizes.sum()) + len(_TRAILER)
    out = np.zeros(total, dtype=np.uint8)
    out[: len(_HEADER)] = np.frombuffer(_HEADER, np.uint8)
    out[total - len(_TRAILER) :] = np.frombuffer(_TRAILER, np.uint8)
    out[starts + 1] = len(fields) + 1  # field count, int16 (high byte stays 0)
    at = 2
    for cell in cells:
        width = cell.shape[1]
        out[starts + at + 3] = width  # field length, int32 (under 256)
        out[(starts + at + 4)[:, None] + np.arange(width)] = cell
        at += 4 + width
    for index, text in enumerate(encoded):
        mine = starts[text_of_row == index] + at
        out[(mine[:, None] + np.arange(4))] = np.frombuffer(len(text).to_bytes(4, "big"), np.uint8)
        out[(mine + 4)[:, None] + np.arange(len(text))] = np.frombuffer(text, np.uint8)
    return CopyData(tuple(columns), out.tobytes(), rows)


def _bytes_of(field: npt.NDArray[Any], rows: int) -> npt.NDArray[np.uint8]:
    if field.dtype == np.uint8:
        cells: npt.NDArray[np.uint8] = field.reshape(rows, -1)
        return cells
    wire = ">i8" if field.dtype.kind in "iu" else ">f8"
    return np.ascontiguousarray(field, dtype=wire).view(np.uint8).reshape(rows, 8)
