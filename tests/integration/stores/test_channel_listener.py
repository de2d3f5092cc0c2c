"""A listener that another process counts is one that hears what that process
notifies next: the entity cache's vouching waits for an answer from each."""

from __future__ import annotations

import asyncio
import secrets
from collections import defaultdict
from functools import partial

from stores import PostgresStore
from stores.postgres.listen import ChannelListener
from tests.support.waiting import until


async def test_every_listener_counted_hears_the_next_notice(store: PostgresStore) -> None:
    channel, name = f"test_{secrets.token_hex(4)}", f"polygraph-test-{secrets.token_hex(4)}"
    heard: defaultdict[str, set[int]] = defaultdict(set)

    def hear(listener: int, payload: str) -> None:
        heard[payload].add(listener)

    listeners = [
        ChannelListener(store, channel, partial(hear, index), application_name=name)
        for index in range(6)
    ]
    counted: dict[str, int] = {}

    async def start(index: int) -> None:
        # As a starting replica does: connect, count the others, ask them.
        await listeners[index].connect()
        token = f"from-{index}"
        counted[token] = await listeners[index].others_listening()
        await store.notify(channel, token)

    try:
        # Together, so that some connect while others count.
        await asyncio.gather(*(start(index) for index in range(len(listeners))))
        assert len(counted) == len(listeners)
        for token, others in counted.items():
            sender = int(token.removeprefix("from-"))
            await until(partial(_heard_by_at_least, heard[token], sender, others))
    finally:
        for listener in listeners:
            await listener.aclose()


def _heard_by_at_least(heard: set[int], sender: int, count: int) -> bool:
    return len(heard - {sender}) >= count


async def test_a_listener_whose_connection_is_cut_says_so(store: PostgresStore) -> None:
    channel, name = f"test_{secrets.token_hex(4)}", f"polygraph-test-{secrets.token_hex(4)}"
    lost: list[None] = []
    listener = ChannelListener(
        store,
        channel,
        lambda _payload: None,
        application_name=name,
        on_lost=lambda: lost.append(None),
    )
    await listener.connect()
    try:
        async with store.connection() as conn:
            cut = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE application_name = $1",
                name,
            )
        assert cut == 1
        # What it would have heard meanwhile is lost: its owner is told, to look itself.
        await until(lambda: lost == [None])
        assert not listener.connected
        await listener.wait_closed()
        # Closed here, or replaced by a new connection: nothing is lost.
        await listener.connect()
        await listener.connect()
        await listener.aclose()
        assert lost == [None]
    finally:
        await listener.aclose()
