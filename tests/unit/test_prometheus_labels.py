"""Operation names are client input: the label set they make stays bounded."""

from __future__ import annotations

from typing import Any, cast

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
