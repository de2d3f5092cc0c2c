from __future__ import annotations

from bench.stats import percentile


def test_percentiles_are_samples_taken_by_nearest_rank() -> None:
    samples = [float(n) for n in range(100, 0, -1)]  # 100 down to 1, unsorted on purpose
    assert (percentile(samples, 0.5), percentile(samples, 0.99)) == (51.0, 100.0)
    assert percentile([3.0, 1.0], 0.5) == 3.0  # a sample, not the mean of the two
    assert percentile([7.0], 0.99) == 7.0
    assert percentile([], 0.5) == 0.0
