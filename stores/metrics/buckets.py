"""Bucket arithmetic and gap filling: pure, shared by both backends.

Buckets are half-open `[start, start + width)` and aligned to ORIGIN, a Monday
at midnight UTC (TimescaleDB's default), so hour and day buckets fall on whole
UTC hours and days and week buckets start on Mondays. A requested window is
widened to whole buckets, which is what lets a rollup answer for the raw points.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from stores.errors import InvalidInput
from stores.metrics.records import PERCENTILES, Aggregate, BucketValue, Fill, Source

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
MIN_BUCKET = timedelta(seconds=1)
MAX_BUCKET = timedelta(days=366)
MAX_BUCKETS = 10_000

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_BUCKET = re.compile(r"^\s*(\d{1,7})\s*([smhdw])\s*$")


def parse_bucket(text: str, *, field: str = "bucket") -> timedelta:
    """`30s`, `5m`, `1h`, `1d`, `1w` to a width; months vary in length and are refused."""
    match = _BUCKET.match(text)
    if match is None:
        raise InvalidInput(field, f"{text!r} is not a bucket width like 30s, 5m, 1h, 1d or 1w")
    width = timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if not MIN_BUCKET <= width <= MAX_BUCKET:
        raise InvalidInput(field, "a bucket is between 1 second and 366 days wide")
    return width


def format_bucket(width: timedelta) -> str:
    seconds = int(width.total_seconds())
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def align_down(moment: datetime, width: timedelta) -> datetime:
    return ORIGIN + ((moment - ORIGIN) // width) * width


def align_up(moment: datetime, width: timedelta) -> datetime:
    start = align_down(moment, width)
    return start if start == moment else start + width


@dataclass(frozen=True, slots=True)
class Window:
    """Whole buckets covering `[start, end)`; build it with `Window.of`."""

    start: datetime
    end: datetime
    width: timedelta

    @classmethod
    def of(cls, start: datetime, end: datetime, width: timedelta) -> Window:
        if start.tzinfo is None or end.tzinfo is None:
            raise InvalidInput("from", "times need a UTC offset, e.g. 2024-05-01T12:00:00Z")
        if end <= start:
            raise InvalidInput("to", "`to` must be later than `from`")
        window = cls(align_down(start, width), align_up(end, width), width)
        if window.count > MAX_BUCKETS:
            raise InvalidInput(
                "bucket", f"{window.count} buckets asked for; at most {MAX_BUCKETS}, widen bucket"
            )
        return window

    @property
    def count(self) -> int:
        return (self.end - self.start) // self.width

    def starts(self) -> list[datetime]:
        return [self.start + index * self.width for index in range(self.count)]


def choose_source(width: timedelta, aggregate: Aggregate, *, labelled: bool) -> Source:
    """The coarsest table that answers exactly: rollups keep no labels and no percentiles."""
    if aggregate in PERCENTILES or labelled:
        return Source.RAW
    if width % HOUR == timedelta(0):
        return Source.HOUR
    if width % MINUTE == timedelta(0):
        return Source.MINUTE
    return Source.RAW


def fill(window: Window, found: Sequence[BucketValue], how: Fill) -> list[BucketValue]:
    """The buckets of `window`, gaps filled as asked; `found` is sorted by time."""
    if how is Fill.NONE:
        return list(found)
    by_time = {bucket.time: bucket.value for bucket in found}
    starts = window.starts()
    values: list[float | None] = [by_time.get(start) for start in starts]
    if how is Fill.PREVIOUS:
        previous: float | None = None
        for index, value in enumerate(values):
            if value is None:
                values[index] = previous
            else:
                previous = value
    elif how is Fill.LINEAR:
        values = _interpolate(values)
    return [BucketValue(start, value) for start, value in zip(starts, values, strict=True)]


def _interpolate(values: list[float | None]) -> list[float | None]:
    known = [index for index, value in enumerate(values) if value is not None]
    result = list(values)
    for left, right in itertools.pairwise(known):
        low, high = values[left], values[right]
        assert low is not None and high is not None
        for index in range(left + 1, right):
            result[index] = low + (high - low) * (index - left) / (right - left)
    return result
