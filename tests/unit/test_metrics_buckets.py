from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from stores import InvalidInput
from stores.metrics import Aggregate, BucketValue, Fill, Source, Window, format_bucket, parse_bucket
from stores.metrics.buckets import MAX_BUCKETS, align_down, align_up, choose_source, fill
from stores.metrics.options import MetricsOptions
from stores.metrics.partitions import partition_of, partitions_covering
from stores.metrics.validation import PointRejected, check_labels, check_time, check_value

T = datetime(2024, 5, 6, 10, 0, tzinfo=UTC)  # a Monday
MINUTE, HOUR, DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)


def test_bucket_widths_parse_and_print() -> None:
    assert parse_bucket("30s") == timedelta(seconds=30)
    assert parse_bucket(" 5m ") == 5 * MINUTE
    assert parse_bucket("1w") == 7 * DAY
    assert format_bucket(90 * MINUTE) == "90m" and format_bucket(7 * DAY) == "1w"
    for bad in ("", "1mo", "0s", "400d", "1.5h", "-1h"):
        with pytest.raises(InvalidInput):
            parse_bucket(bad)


def test_buckets_are_aligned_to_utc_units_whatever_the_offset() -> None:
    kolkata = timezone(timedelta(hours=5, minutes=30))
    moment = (T + 7 * MINUTE + timedelta(seconds=5)).astimezone(kolkata)
    assert align_down(moment, HOUR) == T
    assert align_down(moment, 5 * MINUTE) == T + 5 * MINUTE
    assert align_down(moment, DAY) == T.replace(hour=0)
    assert align_down(moment, 7 * DAY) == T.replace(hour=0)  # weeks start on Monday
    assert align_up(T, HOUR) == T and align_up(T + timedelta(microseconds=1), HOUR) == T + HOUR


def test_a_window_is_whole_buckets_and_bounded() -> None:
    window = Window.of(T + 10 * MINUTE, T + 2 * HOUR + MINUTE, HOUR)
    assert (window.start, window.end, window.count) == (T, T + 3 * HOUR, 3)
    with pytest.raises(InvalidInput, match="later"):
        Window.of(T, T, HOUR)
    with pytest.raises(InvalidInput, match="UTC offset"):
        Window.of(T.replace(tzinfo=None), T + HOUR, HOUR)
    with pytest.raises(InvalidInput, match=str(MAX_BUCKETS)):
        Window.of(T, T + 30 * DAY, MINUTE)


def test_the_source_is_the_coarsest_exact_one() -> None:
    assert choose_source(timedelta(seconds=30), Aggregate.AVG, labelled=False) is Source.RAW
    assert choose_source(90 * timedelta(seconds=1), Aggregate.AVG, labelled=False) is Source.RAW
    assert choose_source(5 * MINUTE, Aggregate.LAST, labelled=False) is Source.MINUTE
    assert choose_source(90 * MINUTE, Aggregate.SUM, labelled=False) is Source.MINUTE
    assert choose_source(DAY, Aggregate.COUNT, labelled=False) is Source.HOUR
    assert choose_source(DAY, Aggregate.P95, labelled=False) is Source.RAW
    assert choose_source(DAY, Aggregate.AVG, labelled=True) is Source.RAW


def test_fill_modes() -> None:
    window = Window.of(T, T + 5 * MINUTE, MINUTE)
    found = [BucketValue(T + MINUTE, 2.0), BucketValue(T + 4 * MINUTE, 8.0)]
    assert fill(window, found, Fill.NONE) == found
    values = {how: [b.value for b in fill(window, found, how)] for how in Fill}
    assert values[Fill.NULL] == [None, 2.0, None, None, 8.0]
    assert values[Fill.PREVIOUS] == [None, 2.0, 2.0, 2.0, 8.0]
    assert values[Fill.LINEAR] == [None, 2.0, 4.0, 6.0, 8.0]


def test_partitions_are_named_by_their_start() -> None:
    assert partition_of(T + 5 * HOUR, DAY).name == "metric_points_20240506_0000"
    covering = partitions_covering(T, T + 2 * DAY, DAY)
    assert [p.start for p in covering] == [T.replace(hour=0) + k * DAY for k in range(3)]
    assert partition_of(T + 5 * MINUTE, 6 * HOUR).end == T.replace(hour=12)


def test_point_checks() -> None:
    now = T
    with pytest.raises(PointRejected, match="finite"):
        check_value(float("nan"))
    with pytest.raises(PointRejected, match="number"):
        check_value(True)
    assert check_value(3) == 3.0
    with pytest.raises(PointRejected, match="ahead"):
        check_time(now + HOUR, now=now, retention=DAY, future=MINUTE)
    with pytest.raises(PointRejected, match="older"):
        check_time(now - 2 * DAY, now=now, retention=DAY, future=MINUTE)
    with pytest.raises(PointRejected, match="offset"):
        check_time(now.replace(tzinfo=None), now=now, retention=DAY, future=MINUTE)
    assert check_labels(None) == {}
    with pytest.raises(PointRejected, match="strings"):
        check_labels({"a": 1})


def test_options_validate_themselves() -> None:
    with pytest.raises(ValueError, match="identifier"):
        MetricsOptions(dsn="postgresql://x", schema="Robert'); DROP")
    with pytest.raises(ValueError, match="divide a day"):
        MetricsOptions(dsn="postgresql://x", chunk_interval=timedelta(hours=7))
    with pytest.raises(ValueError, match="retention"):
        MetricsOptions(dsn="postgresql://x", retention=HOUR)
    assert "secret" not in repr(MetricsOptions(dsn="postgresql://secret@x"))
