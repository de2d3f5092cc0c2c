"""The entity cache's memory level: a read that raced a change never stores what it read."""

from __future__ import annotations

from uuid import uuid4

from stores.cache.local import MISSING, LocalCache


def test_a_load_that_began_before_a_change_does_not_fill() -> None:
    cache = LocalCache(capacity=10)
    key = ("agents", uuid4())
    ticket = cache.begin_load()
    cache.invalidate("agents", [key[1]])
    assert cache.fill(key, "read before the change", 60, ticket) is False
    cache.end_load()
    assert cache.get(key) is MISSING

    ticket = cache.begin_load()
    assert cache.fill(key, "read after it", 60, ticket) is True
    cache.end_load()
    assert cache.get(key) == "read after it"


def test_dropping_a_kind_or_everything_refuses_loads_in_flight() -> None:
    cache = LocalCache(capacity=10)
    agent, task = ("agents", uuid4()), ("tasks", uuid4())
    ticket = cache.begin_load()
    cache.invalidate_kind("agents")
    assert cache.fill(agent, 1, 60, ticket) is False
    assert cache.fill(task, 2, 60, ticket) is True
    cache.clear()
    assert cache.fill(task, 3, 60, ticket) is False
    cache.end_load()
    assert cache.get(task) is MISSING


def test_entries_expire_and_the_least_recently_used_go_first() -> None:
    cache = LocalCache(capacity=2)
    first, second, third = (("agents", uuid4()) for _ in range(3))
    ticket = cache.begin_load()
    cache.fill(first, 1, 60, ticket)
    cache.fill(second, 2, 60, ticket)
    assert cache.get(first) == 1  # now the most recently used
    cache.fill(third, 3, 60, ticket)
    assert cache.get(second) is MISSING
    assert cache.get(first) == 1
    cache.fill(second, 2, -1, ticket)  # already expired
    assert cache.get(second) is MISSING
    cache.end_load()
