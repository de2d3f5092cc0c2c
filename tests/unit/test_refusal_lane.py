"""Refusals are answered one at a time, one per event-loop turn."""

from __future__ import annotations

import asyncio

from resolvers.rate_limits import RefusalLane


async def test_refusals_take_turns_with_everything_else() -> None:
    lane = RefusalLane()
    turns = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal turns
        while not stop.is_set():
            turns += 1
            await asyncio.sleep(0)

    answered_at: list[int] = []

    async def refusal() -> None:
        await lane.wait()
        answered_at.append(turns)

    ticking = asyncio.create_task(ticker())
    await asyncio.gather(*(refusal() for _ in range(10)))
    stop.set()
    await ticking
    # Ten refusals waiting at once are answered in ten different turns, in order.
    assert len(set(answered_at)) == 10
    assert answered_at == sorted(answered_at)


async def test_past_its_limit_the_lane_answers_at_once() -> None:
    lane = RefusalLane(max_waiting=2)
    done: list[int] = []

    async def refusal(i: int) -> None:
        await lane.wait()
        done.append(i)

    tasks = [asyncio.create_task(refusal(i)) for i in range(5)]
    await asyncio.sleep(0)
    # Two wait their turn; the other three did not wait.
    assert sorted(done) == [2, 3, 4]
    await asyncio.gather(*tasks)
    assert sorted(done) == [0, 1, 2, 3, 4]


async def test_a_refusal_is_held_before_it_is_answered() -> None:
    # Held far longer than this test lasts: only the loop's other work goes on.
    lane = RefusalLane(delay_s=30)
    held = asyncio.create_task(lane.wait())
    for _ in range(20):
        await asyncio.sleep(0)
    assert not held.done()
    # A lane that is full answers at once, held or not.
    full = RefusalLane(max_waiting=1, delay_s=30)
    first = asyncio.create_task(full.wait())
    await asyncio.sleep(0)
    await asyncio.wait_for(full.wait(), timeout=30)
    assert not first.done()
    for task in (held, first):
        task.cancel()
    await asyncio.gather(held, first, return_exceptions=True)
