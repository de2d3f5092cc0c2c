"""Sessions and events through a Redis Sentinel, across a failover."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import replace

from gateway.settings import Settings
from stores import RedisStore
from stores.redis.sessions import SESSION_KEY
from tests.integration.api.conftest import Caller
from tests.integration.redis.conftest import gateway_over
from tests.support.redis_topologies import SentinelSetup
from tests.support.serving import wait_until


def _session_key(token: str) -> str:
    return SESSION_KEY + hashlib.sha256(token.encode()).hexdigest()


def test_sessions_and_events_keep_working_across_a_failover(
    settings: Settings, sentinel: SentinelSetup, operator: Caller
) -> None:
    with gateway_over(settings, sentinel.url) as gateway:
        health = gateway.post("{ health { status } }", {}, {}).json()
        assert health["data"]["health"]["status"] == "HEALTHY"
        token = gateway.login(operator)
        assert gateway.viewer_status(token) == 200
        old_master = sentinel.servers[sentinel.master_port()]
        assert old_master.command("EXISTS", _session_key(token)) == 1

        with gateway.task_updates(operator) as ws:
            assert gateway.created_title_arrives(ws, operator)

            # Replicated before the switch, as a session older than the replication
            # delay would be (Redis replicates asynchronously).
            assert old_master.command("WAIT", 1, 10_000) == 1
            new_port = sentinel.failover()
            new_master = sentinel.servers[new_port]

            sessions = gateway.stores.sessions
            assert sessions is not None
            wait_until(
                lambda: gateway.viewer_status(token) == 200 and not sessions.fallback_active,
                what="sessions served from the new master",
            )
            after = gateway.login(operator)
            assert gateway.viewer_status(after) == 200
            assert new_master.command("EXISTS", _session_key(after)) == 1
            wait_until(
                lambda: gateway.created_title_arrives(ws, operator),
                what="events through the new master",
            )


async def test_a_burst_beyond_the_masters_pool_waits_for_a_connection(
    settings: Settings, sentinel: SentinelSetup
) -> None:
    options = replace(settings.redis_options(), url=sentinel.url, max_connections=2)
    key = f"test:pool:{secrets.token_hex(6)}"
    async with RedisStore(options) as store:
        counts = await asyncio.gather(*(store.client.incr(key) for _ in range(40)))
        assert sorted(counts) == list(range(1, 41))
