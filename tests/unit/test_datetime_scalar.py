"""`DateTime` inputs read by the standard library where it agrees with Strawberry's
dateutil parser, and by Strawberry's own parser everywhere else: the same values
and the same refusals, across the ISO 8601 shapes clients might send."""

from __future__ import annotations

import itertools

import pytest
from strawberry.exceptions import StrawberryInputCoercionError
from strawberry.schema.types.base_scalars import DateTimeDefinition

from schema.build import build_schema
from schema.scalars import parse_datetime

_DATES = ["2026-12-06", "20261206", "2026-W49-1", "2026-340", "2024-02-29", "2026-02-30"]
_TIMES = [
    "",
    "T10",
    "T10:00",
    "T10:00:00",
    "T100000",
    "T10:00:00.1",
    "T10:00:00.123456",
    "T10:00:00.1234567",
    "T10:00:00,5",
    "T24:00",
    "T23:59:60",
    " 10:00:00",
    "t10:00",
    "T10:00:00.",
    "T10.5",
]
_OFFSETS = ["", "Z", "z", "+00:00", "+0000", "+00", "-05:30", "+05:30:15", "+24:00", "UTC"]
_TEXTS = sorted(
    {
        date + time + (offset if time else "")
        for date, time, offset in itertools.product(_DATES, _TIMES, _OFFSETS)
    }
)


def _outcome(parse: object, value: object) -> tuple[str, object]:
    assert callable(parse)
    try:
        parsed = parse(value)
    except Exception as exc:  # the refusal itself is what is compared
        return type(exc).__name__, str(exc)
    return "value", (parsed, parsed.utcoffset())


@pytest.mark.parametrize("value", [*_TEXTS, 20261206, None, ["2026-12-06"]])
def test_every_shape_parses_and_is_refused_as_strawberry_does(value: object) -> None:
    assert _outcome(parse_datetime, value) == _outcome(DateTimeDefinition.parse_value, value)


def test_the_schema_reads_datetime_inputs_with_it() -> None:
    scalar = build_schema()._schema.type_map["DateTime"]
    assert getattr(scalar, "parse_value", None) is parse_datetime


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-00:01"])
def test_an_instant_outside_the_years_1_to_9999_is_refused(value: str) -> None:
    with pytest.raises(StrawberryInputCoercionError, match="outside the years 1 to 9999"):
        parse_datetime(value)


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00Z", "9999-12-31T23:59:59+00:00"])
def test_the_first_and_last_instants_are_taken(value: str) -> None:
    assert _outcome(parse_datetime, value) == _outcome(DateTimeDefinition.parse_value, value)
