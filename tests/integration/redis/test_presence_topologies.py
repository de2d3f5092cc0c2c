"""Presence's scripts and pipelines on a Redis Cluster and behind Sentinel: every key
one call touches shares a hash slot, and heartbeats carry on across a failover."""

from __future__ import annotations

from uuid import UUID, uuid4

from pydantic import SecretStr

from gateway.settings import Settings
from stores import RedisStore, StoreUnavailable
from stores.redis.presence import (
    FORGET_CURSOR_KEY,
    LAST_KEY,
    SEEN_KEY,
    PresenceOptions,
    PresenceStore,
    agent_key,
)
from tests.support.redis_topologies import ClusterSetup, SentinelSetup
from tests.support.waiting import until

QUICK = PresenceOptions(offline_after=1.0, forget_after=1.0)


def _over(settings: Settings, url: str) -> RedisStore:
    return RedisStore(settings.model_copy(update={"redis_url": SecretStr(url)}).redis_options())


async def _round(presence: PresenceStore) -> list[UUID]:
    """Every presence call once: reports, a page read, who is online, a sweep and
    forgetting; returns the agents it used."""
    ids = [uuid4() for _ in range(5)]
    for agent_id in ids:
        _, changes = await presence.report(agent_id, activity="coding", load=0.25, details={})
        assert [c.change for c in changes] == ["online"]
    found = await presence.read(ids)
    assert all(found[i].online and found[i].activity == "coding" for i in ids)
    assert set(ids) <= set(await presence.online_ids(10_000))

    async def swept() -> bool:
        return not set(ids) & set(await presence.online_ids(10_000))

    claimed: set[UUID] = set()

    async def all_claimed() -> bool:
        claimed.update(c.agent_id for c in await presence.sweep())
        return set(ids) <= claimed

    await until(all_claimed)
    assert await swept()

    async def forgotten() -> bool:
        await presence.forget()
        return all(p.last_seen_at is None for p in (await presence.read(ids)).values())

    await until(forgotten)
    return ids


async def test_presence_on_a_cluster(settings: Settings, cluster: ClusterSetup) -> None:
    async with _over(settings, cluster.url) as redis:
        await _round(PresenceStore(redis, QUICK))
    keys = [agent_key(uuid4()), SEEN_KEY, LAST_KEY, FORGET_CURSOR_KEY]
    slots = {cluster.nodes[0].command("CLUSTER", "KEYSLOT", key) for key in keys}
    assert len(slots) == 1, "every presence key shares one slot"


async def test_presence_through_sentinel_across_a_failover(
    settings: Settings, sentinel: SentinelSetup
) -> None:
    async with _over(settings, sentinel.url) as redis:
        presence = PresenceStore(redis, QUICK)
        await _round(presence)

        agent_id = uuid4()
        await presence.report(agent_id, activity="before", load=0.5, details={})
        old_master = sentinel.servers[sentinel.master_port()]
        assert old_master.command("WAIT", 1, 10_000) == 1
        new_master = sentinel.servers[sentinel.failover()]

        async def reported_on_the_new_master() -> bool:
            try:
                await presence.report(agent_id, activity="after", load=0.5, details={})
            except StoreUnavailable:
                return False
            return True

        await until(reported_on_the_new_master)
        assert new_master.command("HGET", agent_key(agent_id), "activity") == b"after"
        assert (await presence.read([agent_id]))[agent_id].activity == "after"
        await _round(presence)
