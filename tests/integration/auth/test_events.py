"""The event bus across two processes' worth of stores, over a real Redis."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from gateway.settings import Settings
from infra.local.redis_server import RedisServer
from stores import RedisOptions, RedisStore, roundtrips
from stores.errors import StoreMisuse
from stores.redis.events import Event, EventBus, Subscription

TIMEOUT_S = 5.0


@pytest.fixture
def namespace() -> str:
    # Pub/sub is server-wide: a namespace per test keeps parallel runs apart.
    return f"test-{secrets.token_hex(4)}"


@pytest.fixture
async def two_buses(settings: Settings, namespace: str) -> AsyncIterator[tuple[EventBus, EventBus]]:
    async with (
        RedisStore(settings.redis_options()) as first_redis,
        RedisStore(settings.redis_options()) as second_redis,
        EventBus(first_redis, namespace=namespace) as first,
        EventBus(second_redis, namespace=namespace, queue_size=2) as second,
    ):
        yield first, second


async def _next(subscription: Subscription) -> dict[str, object]:
    return await asyncio.wait_for(anext(subscription), TIMEOUT_S)


async def _eventually(check: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_events_cross_processes(two_buses: tuple[EventBus, EventBus]) -> None:
    first, second = two_buses
    async with (
        second.subscribe("task.updated") as remote,
        first.subscribe("task.updated") as local,
        first.subscribe("agent.status_changed") as other_channel,
    ):
        await first.publish("task.updated", {"task_id": "t1", "status": "completed"})
        assert await _next(remote) == {"task_id": "t1", "status": "completed"}
        assert await _next(local) == {"task_id": "t1", "status": "completed"}
        await second.publish("agent.status_changed", {"agent_id": "a1"})
        assert await _next(other_channel) == {"agent_id": "a1"}
        assert remote.dropped == local.dropped == 0
    assert first.published == second.published == 1


async def test_events_published_together_take_one_round_trip_and_keep_their_order(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses
    async with (
        second.subscribe("task.updated") as updates,
        second.subscribe("task.available") as available,
    ):
        with roundtrips.counting() as trips:
            await first.publish_all(
                [
                    ("task.updated", {"task_id": "t1", "change": "created"}),
                    ("task.available", {"task_id": "t1"}),
                    ("task.updated", {"task_id": "t2", "change": "created"}),
                ]
            )
        assert trips == {"redis": 1}
        assert await _next(updates) == {"task_id": "t1", "change": "created"}
        assert await _next(updates) == {"task_id": "t2", "change": "created"}
        assert await _next(available) == {"task_id": "t1"}
    assert first.published == 3


async def test_one_redis_subscription_per_process(
    two_buses: tuple[EventBus, EventBus], redis: RedisStore, namespace: str
) -> None:
    first, second = two_buses
    channel = f"{namespace}:task.updated"

    async def subscribers() -> int:
        ((_, count),) = await redis.client.pubsub_numsub(channel)
        return int(count)

    async with first.subscribe("task.updated") as a, first.subscribe("task.updated") as b:
        async with second.subscribe("task.updated"):
            assert await subscribers() == 2
            await second.publish("task.updated", {"n": 1})
            assert await _next(a) == await _next(b) == {"n": 1}
        await _eventually_async(lambda: _equals(subscribers(), 1))
    await _eventually_async(lambda: _equals(subscribers(), 0))


async def test_local_subscribers_share_one_read_only_event(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses
    async with first.subscribe("task.updated") as a, first.subscribe("task.updated") as b:
        assert first.subscribers("task.updated") == 2
        builds: list[str] = []

        def build() -> str:
            builds.append("built")
            return f"derived #{len(builds)}"

        for n in (1, 2):
            await second.publish("task.updated", {"n": n})
            seen_by_a, seen_by_b = await _next(a), await _next(b)
            assert seen_by_a is seen_by_b  # one decoded object for every local subscriber
            assert isinstance(seen_by_a, Event) and isinstance(seen_by_b, Event)
            # The first subscriber to ask builds; the others reuse; each event starts afresh.
            assert seen_by_a.memo("k", build) == seen_by_b.memo("k", build) == f"derived #{n}"
            assert len(builds) == n
            with pytest.raises(TypeError):
                seen_by_a["n"] = 0
            with pytest.raises(TypeError):
                seen_by_b.update(n=0)
            assert seen_by_a == {"n": n}
            assert dict(seen_by_a) | {"n": 0} == {"n": 0}  # a copy is the caller's own
    assert first.subscribers("task.updated") == 0


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _eventually_async(check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_slow_subscriber_loses_its_oldest_events(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses  # second keeps 2 events per subscriber
    async with second.subscribe("metric.recorded") as slow:
        for n in range(5):
            await first.publish("metric.recorded", {"n": n})
        await _eventually(lambda: second.received == 5)
        assert slow.dropped == second.dropped == 3
        assert [await _next(slow), await _next(slow)] == [{"n": 3}, {"n": 4}]


async def test_malformed_events_are_skipped(
    two_buses: tuple[EventBus, EventBus], redis: RedisStore, namespace: str
) -> None:
    first, _ = two_buses
    async with first.subscribe("task.updated") as subscription:
        await redis.client.publish(f"{namespace}:task.updated", b"not json")
        await redis.client.publish(f"{namespace}:task.updated", b"[1, 2]")
        await first.publish("task.updated", {"ok": True})
        assert await _next(subscription) == {"ok": True}
    assert first.malformed == 2


async def _answered_by(leader: Subscription) -> list[object]:
    answered: list[object] = []

    async def send(follower: Subscription) -> None:
        answered.append(follower.tag)

    await leader.answer_followers(send)
    return answered


async def test_a_group_gets_each_event_once_and_its_leader_answers_for_the_rest(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses
    async with (
        first.subscribe("task.updated", group="same", tag="leader") as leader,
        first.subscribe("task.updated", group="same", tag="a") as a,
        first.subscribe("task.updated", group="same", tag="b") as b,
        first.subscribe("task.updated", tag="alone") as alone,
    ):
        assert first.subscribers("task.updated") == 4
        followers = [asyncio.create_task(anext(a)), asyncio.create_task(anext(b))]
        await _eventually(lambda: a.waiting and b.waiting)
        for n in (1, 2):
            await second.publish("task.updated", {"n": n})
            assert await _next(leader) == await _next(alone) == {"n": n}
            # In the order they joined; each still waiting: nothing came to them.
            assert await _answered_by(leader) == ["a", "b"]
            assert await _answered_by(leader) == []  # answered once
            assert not any(task.done() for task in followers)
        assert first.answered_for_followers == 4
        for task in followers:
            task.cancel()
        await asyncio.gather(*followers, return_exceptions=True)


async def test_a_large_group_lets_other_tasks_run_while_it_is_answered(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses
    async with contextlib.AsyncExitStack() as stack:
        members = [
            await stack.enter_async_context(first.subscribe("task.updated", group="same"))
            for _ in range(71)
        ]
        leader, followers = members[0], members[1:]
        waiting = [asyncio.create_task(anext(follower)) for follower in followers]
        await _eventually(lambda: all(follower.waiting for follower in followers))
        await second.publish("task.updated", {"n": 1})
        assert await _next(leader) == {"n": 1}
        turns = 0

        async def other_work() -> None:
            nonlocal turns
            while True:
                turns += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(other_work())
        await asyncio.sleep(0)  # it runs once before the answers start
        assert len(await _answered_by(leader)) == 70
        # 70 sends that never wait, in three turns: the other task ran between them.
        assert turns == 3
        other.cancel()
        for task in (other, *waiting):
            task.cancel()
        await asyncio.gather(other, *waiting, return_exceptions=True)


async def test_a_follower_busy_with_its_own_events_gets_the_next_in_order(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses
    async with (
        first.subscribe("task.updated", group="same") as leader,
        first.subscribe("task.updated", group="same") as busy,
    ):
        # `busy` has not asked for an event yet: the leader's answers would overtake its own.
        for n in (1, 2):
            await second.publish("task.updated", {"n": n})
            assert await _next(leader) == {"n": n}
            assert await _answered_by(leader) == []
        # An answer not to share (one with errors): each follower answers it itself.
        await second.publish("task.updated", {"n": 3})
        assert await _next(leader) == {"n": 3}
        leader.hand_over()
        assert [await _next(busy) for _ in range(3)] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert first.answered_for_followers == 0


async def test_a_follower_that_stopped_reading_holds_up_only_itself(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses
    async with (
        first.subscribe("task.updated", group="same", tag="leader") as leader,
        first.subscribe("task.updated", group="same", tag="stuck") as stuck,
        first.subscribe("task.updated", group="same", tag="reading") as reading,
    ):
        followers = [asyncio.create_task(anext(stuck)), asyncio.create_task(anext(reading))]
        await _eventually(lambda: stuck.waiting and reading.waiting)
        await second.publish("task.updated", {"n": 1})
        assert await _next(leader) == {"n": 1}
        answered: list[object] = []

        async def send(follower: Subscription) -> None:
            if follower.tag == "stuck":
                await asyncio.Event().wait()  # a full socket that never drains
            answered.append(follower.tag)

        await asyncio.wait_for(leader.answer_followers(send), TIMEOUT_S)
        assert answered == ["reading"]
        # The stuck one answers the event itself, from its own queue.
        assert await asyncio.wait_for(followers[0], TIMEOUT_S) == {"n": 1}
        assert first.answered_for_followers == 1
        followers[1].cancel()
        await asyncio.gather(followers[1], return_exceptions=True)


async def test_a_leaving_leader_leaves_what_it_had_not_answered_to_its_followers(
    two_buses: tuple[EventBus, EventBus],
) -> None:
    first, second = two_buses
    leading = first.subscribe("task.updated", group="same")
    leader = await leading.__aenter__()
    async with first.subscribe("task.updated", group="same") as follower:
        for n in (1, 2):
            await second.publish("task.updated", {"n": n})
        await _eventually(lambda: first.received == 2)
        assert await _next(leader) == {"n": 1}  # taken, not answered; {"n": 2} queued
        await leading.__aexit__(None, None, None)
        assert first.subscribers("task.updated") == 1
        assert [await _next(follower), await _next(follower)] == [{"n": 1}, {"n": 2}]
        # The follower leads now: the bus gives it the events.
        await second.publish("task.updated", {"n": 3})
        assert await _next(follower) == {"n": 3}


async def test_closing_the_bus_ends_subscriptions(settings: Settings, namespace: str) -> None:
    async with RedisStore(settings.redis_options()) as redis:
        bus = EventBus(redis, namespace=namespace)
        await bus.start()
        received: list[dict[str, object]] = []
        subscribed = asyncio.Event()

        async def consume() -> None:
            async with bus.subscribe("task.updated") as subscription:
                subscribed.set()
                async for event in subscription:
                    received.append(event)

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(subscribed.wait(), TIMEOUT_S)
        await bus.publish("task.updated", {"n": 1})
        await _eventually(lambda: len(received) == 1)
        await bus.aclose()
        await asyncio.wait_for(consumer, TIMEOUT_S)
        await bus.aclose()  # idempotent
        with pytest.raises(StoreMisuse):
            await bus.start()


async def test_reconnects_after_redis_restarts(
    private_redis: RedisServer, private_redis_store: RedisStore, namespace: str
) -> None:
    subscriber_redis = private_redis_store
    publisher_options = RedisOptions(
        url=f"redis://127.0.0.1:{private_redis.port}/0", command_timeout=0.5, connect_timeout=0.5
    )
    async with (
        RedisStore(publisher_options) as publisher_redis,
        EventBus(publisher_redis, namespace=namespace) as publisher,
        EventBus(subscriber_redis, namespace=namespace, max_reconnect_delay=0.5) as subscriber,
        subscriber.subscribe("task.updated") as subscription,
    ):
        await publisher.publish("task.updated", {"n": 1})
        assert await _next(subscription) == {"n": 1}

        private_redis.stop()
        await publisher.publish("task.updated", {"n": 2})  # never raises
        assert publisher.publish_failures == 1
        await _eventually(lambda: not subscriber.connected)

        private_redis.start()
        await _eventually(lambda: subscriber.connected)
        # The resubscription races the first publishes; keep publishing until one lands.
        deadline = time.monotonic() + TIMEOUT_S
        n = 3
        while True:
            await publisher.publish("task.updated", {"n": n})
            try:
                event = await asyncio.wait_for(anext(subscription), 0.2)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "no event after Redis came back"
                n += 1
        assert isinstance(event["n"], int) and event["n"] >= 3
        assert subscriber.reconnects == 1
