"""Operation names are client input: the label set they make stays bounded."""

from __future__ import annotations

import logging
from typing import Any, cast

from gateway.cli import LOG_FORMAT
from gateway.prometheus import (
    ANONYMOUS,
    MAX_OPERATION_NAME_LENGTH,
    MAX_OPERATION_NAMES,
    OTHER,
    GatewayMetrics,
)


def test_operation_names_past_the_limit_count_as_other() -> None:
    # The stores are read only at scrape time; naming operations needs none.
    metrics = GatewayMetrics(cast(Any, None))
    assert metrics.operation_label(None) == ANONYMOUS
    assert metrics.operation_label("x" * (MAX_OPERATION_NAME_LENGTH + 1)) == OTHER
    for n in range(MAX_OPERATION_NAMES):
        assert metrics.operation_label(f"Op{n}") == f"Op{n}"
    assert metrics.operation_label("OneTooMany") == OTHER
    assert metrics.operation_label("Op0") == "Op0"


def test_plain_log_lines_start_with_a_timestamp() -> None:
    record = logging.LogRecord("polygraph", logging.INFO, __file__, 1, "ready", None, None)
    line = logging.Formatter(LOG_FORMAT).format(record)
    date, time_of_day, level, rest = line.split(" ", 3)
    assert len(date) == 10 and date[4] == "-" and time_of_day[2] == ":"
    assert (level, rest) == ("INFO", "polygraph: ready")
