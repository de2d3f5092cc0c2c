"""The bounded mapping behind the gateway's in-process caches."""

from __future__ import annotations

import pytest

from stores.cache.lru import Lru


def test_the_least_recently_used_goes_first_beyond_capacity() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # read: now the most recently used
    cache.put("c", 3)
    assert list(cache) == ["a", "c"]
    cache.put("a", 10)  # written: moves last too
    cache.put("d", 4)
    assert dict(cache.items()) == {"a": 10, "d": 4}


def test_looking_leaves_the_order_and_a_miss_answers_the_default() -> None:
    cache: Lru[str, int] = Lru(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert "a" in cache
    cache.put("c", 3)
    assert "a" not in cache
    assert cache.get("a") is None
    missing = object()
    assert cache.get("a", missing) is missing
    assert cache.pop("b") == 2
    assert cache.pop("b") is None
    assert len(cache) == 1
    cache.clear()
    assert len(cache) == 0


def test_a_capacity_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        Lru(0)


def test_weighted_entries_are_dropped_until_their_weights_fit() -> None:
    cache: Lru[str, int] = Lru(10, max_weight=10)
    cache.put("a", 1, weight=4)
    cache.put("b", 2, weight=4)
    assert cache.weight == 8
    cache.put("c", 3, weight=4)  # 12: the oldest goes
    assert list(cache) == ["b", "c"]
    assert cache.weight == 8
    cache.put("b", 20, weight=1)  # rewritten lighter
    assert cache.weight == 5
    # Heavier than the whole budget: not kept, and not kept under its old value either.
    cache.put("c", 30, weight=11)
    assert list(cache) == ["b"]
    assert cache.weight == 1
    assert cache.pop("b") == 20
    assert cache.weight == 0
    cache.put("d", 4, weight=3)
    cache.clear()
    assert cache.weight == 0
    assert len(cache) == 0
