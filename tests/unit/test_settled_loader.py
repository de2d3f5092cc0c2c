"""`SettledLoader`: keys loaded up front answer without another batch, and a loader
let go of is freed at once, not by the cyclic garbage collector."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from resolvers.loaders import SettledLoader


@pytest.fixture
def no_cyclic_collection() -> Iterator[None]:
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


async def test_settled_keys_are_never_fetched_again(no_cyclic_collection: None) -> None:
    batches: list[list[int]] = []

    async def squares(keys: list[int]) -> list[int | None]:
        batches.append(list(keys))
        return [key * key if key else None for key in keys]

    loader: SettledLoader[int, int | None] = SettledLoader(squares)
    await loader.settle([2, 3, 0, 2])
    assert batches == [[2, 3, 0]]
    assert loader.settled_values([3, 0, 2]) == [9, None, 4]
    # A key not settled: none of the values, not even a None.
    assert loader.settled_values([2, 5]) is None
    assert await loader.load_many([0, 3, 5]) == [None, 9, 25]
    assert batches == [[2, 3, 0], [5]]
    assert loader.settled(5) == 25

    loader.clear(3)
    assert await loader.load(3) == 9
    assert batches[-1] == [3]

    loader.clear_all()
    assert loader.settled_values([2]) is None
    assert await loader.load(2) == 4
    assert batches[-1] == [2]

    # Dropped after `forget`, it is freed by its reference count alone.
    gone = weakref.ref(loader)
    loader.forget()
    del loader
    assert gone() is None
