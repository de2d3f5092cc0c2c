"""Presence in Redis: transitions a heartbeat makes, and sweeps that claim each expiry
once, however many replicas sweep at the same time."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from stores import RedisStore
from stores.redis.events import EventBus
from stores.redis.presence import PresenceOptions, PresenceStore
from tests.support.waiting import until
from workers.presence import PresenceSweeper

QUICK = PresenceOptions(offline_after=1.0)


async def _all_offline(presence: PresenceStore, ids: list[UUID]) -> bool:
    found = await presence.read(ids)
    return not any(found[agent_id].online for agent_id in ids)


async def test_only_transitions_are_changes(redis: RedisStore) -> None:
    presence = PresenceStore(redis, QUICK)
    agent_id = uuid4()
    now, changes = await presence.report(agent_id, activity="coding", load=0.5, details={})
    assert [c.change for c in changes] == ["online"] and now.last_seen_at is not None
    again, changes = await presence.report(agent_id, activity="coding", load=0.7, details={})
    assert changes == [] and again.last_seen_at is not None and again.load == 0.7
    _, changes = await presence.report(agent_id, activity="reviewing", load=0.7, details={})
    assert [(c.change, c.presence.activity) for c in changes] == [("activity", "reviewing")]

    # Expired before any sweep claimed it: the next heartbeat reports both transitions,
    # and no sweep announces the expiry a second time.
    await until(lambda: _all_offline(presence, [agent_id]))
    _, changes = await presence.report(agent_id, activity="coding", load=0.1, details={})
    assert [c.change for c in changes] == ["offline", "online"]
    assert changes[0].at <= changes[1].at
    assert agent_id not in {c.agent_id for c in await presence.sweep()}


async def test_each_expiry_is_claimed_by_exactly_one_sweep(redis: RedisStore) -> None:
    replicas = [PresenceStore(redis, QUICK) for _ in range(3)]
    ids = [uuid4() for _ in range(30)]
    for agent_id in ids:
        await replicas[0].report(agent_id, activity="coding", load=0.5, details={"n": 1})
    assert set(ids) <= set(await replicas[1].online_ids(10_000))

    await until(lambda: _all_offline(replicas[0], ids))
    swept = await asyncio.gather(*(replica.sweep() for replica in replicas))
    claimed = [c.agent_id for changes in swept for c in changes if c.agent_id in set(ids)]
    assert sorted(claimed) == sorted(ids)
    assert not set(ids) & set(await replicas[2].online_ids(10_000))
    # What is left after going offline: the last heartbeat, nothing else.
    after = (await replicas[2].read(ids[:1]))[ids[0]]
    assert after.online is False and after.last_seen_at is not None and after.activity is None


async def test_sweeps_forget_agents_long_offline_and_keep_the_rest(redis: RedisStore) -> None:
    # Forgotten one second after going offline, two after the last heartbeat.
    presence = PresenceStore(redis, PresenceOptions(offline_after=1.0, forget_after=1.0))
    # Seen lately by the same gateways: a day offline before it is forgotten.
    patient = PresenceStore(redis, PresenceOptions(offline_after=1.0, forget_after=86_400.0))
    gone, recent = uuid4(), uuid4()
    async with EventBus(redis, namespace=f"test-{uuid4().hex[:8]}") as events:
        sweeper = PresenceSweeper(presence, events, interval_s=60)
        await presence.report(gone, activity="coding", load=0.5, details={})

        async def forgotten() -> bool:
            await sweeper.sweep_once()
            return (await presence.read([gone]))[gone].last_seen_at is None

        await until(forgotten)
        assert sweeper.forgotten >= 1
        after = (await presence.read([gone]))[gone]
        assert after.online is False and after.activity is None

    # Offline, but not for long: its last heartbeat stays through whole passes.
    await patient.report(recent, activity="coding", load=0.5, details={})
    await until(lambda: _all_offline(patient, [recent]))
    passes = 0
    while passes < 2:
        _, complete = await patient.forget()
        passes += complete
    assert (await patient.read([recent]))[recent].last_seen_at is not None


def test_forget_after_is_bounded() -> None:
    with pytest.raises(ValueError, match="forget_after"):
        PresenceOptions(forget_after=0)
