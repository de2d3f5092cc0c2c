"""S7's points stay in a reused dataset: they must not land where S2 and S4 read."""

from __future__ import annotations

import uuid
from datetime import datetime

import orjson

from bench.scenarios import RECORD_SEPARATOR, Fixtures, ingest_bodies


def test_ingested_points_land_before_the_window_the_reads_ask_for() -> None:
    fixtures = Fixtures(
        [uuid.uuid4() for _ in range(5)],
        [],
        metrics_from="2026-12-05T04:00:00+00:00",
        metrics_to="2026-12-06T04:00:00+00:00",
    )
    times = [
        datetime.fromisoformat(orjson.loads(line)["time"].replace("Z", "+00:00"))
        for body in ingest_bodies(fixtures)
        for line in body.split(RECORD_SEPARATOR)
    ]
    window_start = datetime.fromisoformat(fixtures.metrics_from)
    assert times and max(times) <= window_start
    # Still a day's worth of buckets.
    assert (max(times) - min(times)).total_seconds() > 20 * 3600
