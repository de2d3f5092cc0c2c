"""The per-caller queue of expensive operations: first come first served, bounded,
and a waiter that gives up (its request cancelled, its deadline passed) leaves no
slot taken."""

from __future__ import annotations

import asyncio

import pytest

from gateway.limits.concurrency import (
    ExpensiveOperationOptions,
    ExpensiveOperations,
    TooManyExpensive,
)
from resolvers.auth import Role
from tests.support.waiting import until


def _gate(queue: int = 2) -> ExpensiveOperations:
    return ExpensiveOperations(ExpensiveOperationOptions(queue=queue))


async def test_waiters_run_in_arrival_order_and_the_queue_is_bounded() -> None:
    gate = _gate(queue=2)
    await gate.acquire("u", Role.VIEWER)
    order: list[str] = []

    async def wait(name: str) -> None:
        await gate.acquire("u", Role.VIEWER)
        order.append(name)

    first = asyncio.create_task(wait("first"))
    second = asyncio.create_task(wait("second"))
    await until(lambda: gate.waiting("u") == 2)
    with pytest.raises(TooManyExpensive):
        await gate.acquire("u", Role.VIEWER)
    gate.release("u")
    await first
    gate.release("u")
    await second
    assert order == ["first", "second"]
    gate.release("u")
    assert (gate.running("u"), gate.waiting("u")) == (0, 0)


async def test_a_cancelled_waiter_takes_no_slot() -> None:
    gate = _gate()
    await gate.acquire("u", Role.VIEWER)
    waiter = asyncio.create_task(gate.acquire("u", Role.VIEWER))
    await until(lambda: gate.waiting("u") == 1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert gate.waiting("u") == 0
    gate.release("u")
    assert gate.running("u") == 0
    # Free again: the next one starts at once.
    await gate.acquire("u", Role.VIEWER)
    assert gate.running("u") == 1


async def test_a_slot_handed_to_a_cancelled_waiter_passes_on() -> None:
    gate = _gate()
    await gate.acquire("u", Role.VIEWER)
    waiter = asyncio.create_task(gate.acquire("u", Role.VIEWER))
    await until(lambda: gate.waiting("u") == 1)
    # Handed the slot, then cancelled before it ran.
    gate.release("u")
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (gate.running("u"), gate.waiting("u")) == (0, 0)


async def test_the_role_decides_the_limit() -> None:
    gate = _gate(queue=0)
    for _ in range(16):
        await gate.acquire("op", Role.OPERATOR)
    with pytest.raises(TooManyExpensive):
        await gate.acquire("op", Role.OPERATOR)
    await gate.acquire("anon", None)
    with pytest.raises(TooManyExpensive):
        await gate.acquire("anon", None)
