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
