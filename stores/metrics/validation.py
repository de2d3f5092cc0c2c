"""Checks every point must pass before it is written, shared by GraphQL and NDJSON ingest.

Only what a point says about itself is checked here; whether its agent and
metric name exist is for the caller, who can reach the registry.
"""

from __future__ import annotations

import math
import re
from datetime import datetime, timedelta
from typing import Any

import orjson

NAME_PATTERN = re.compile(r"[a-z][a-z0-9_.]{0,62}")
MAX_LABELS = 16
MAX_LABELS_BYTES = 1024
MAX_POINTS_PER_REQUEST = 5_000


class PointRejected(ValueError):
    """`field` is relative to the point, e.g. `value` or `labels`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def check_name(name: str) -> None:
    # Whole: `$` would also match before a final newline.
    if not NAME_PATTERN.fullmatch(name):
        raise PointRejected(
            "name", "a metric name is lower case, starts with a letter, at most 63 of a-z 0-9 _ ."
        )


def check_value(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PointRejected("value", "the value must be a number")
    number = float(value)
    if not math.isfinite(number):
        raise PointRejected("value", "the value must be finite (not NaN or infinite)")
    return number


def check_time(moment: datetime, *, now: datetime, retention: timedelta, future: timedelta) -> None:
    if moment.tzinfo is None:
        raise PointRejected("time", "the time needs a UTC offset, e.g. 2024-05-01T12:00:00Z")
    if moment > now + future:
        raise PointRejected(
            "time", f"the time is more than {future} ahead of the server clock ({now.isoformat()})"
        )
    if moment < now - retention:
        raise PointRejected("time", f"the time is older than the retention period ({retention})")


def check_labels(labels: object) -> dict[str, Any]:
    if labels is None:
        return {}
    if not isinstance(labels, dict):
        raise PointRejected("labels", "labels must be a JSON object of strings")
    if len(labels) > MAX_LABELS:
        raise PointRejected("labels", f"at most {MAX_LABELS} labels")
    if not all(isinstance(value, str) for value in labels.values()):
        raise PointRejected("labels", "label values must be strings")
    # PostgreSQL's jsonb refuses it, and with it every point written in the same batch.
    if any("\x00" in text for item in labels.items() for text in item):
        raise PointRejected("labels", "labels cannot hold the NUL character (U+0000)")
    if len(orjson.dumps(labels)) > MAX_LABELS_BYTES:
        raise PointRejected("labels", f"labels take at most {MAX_LABELS_BYTES} bytes")
    return labels
