"""Sessions and events through a Redis Cluster of three masters."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from dataclasses import replace

from gateway.settings import Settings
from resolvers.tasks import TASK_UPDATED_CHANNEL
from stores import RedisStore
from stores.redis.sessions import SESSION_ID_KEY, SESSION_KEY, USER_INDEX
from tests.integration.api.conftest import Caller, data
from tests.integration.redis.conftest import gateway_over
from tests.support.redis_topologies import ClusterSetup


def test_sessions_and_sharded_events_through_a_cluster(
    settings: Settings, cluster: ClusterSetup, operator: Caller
) -> None:
    node = cluster.nodes[0]
    with gateway_over(settings, cluster.url) as gateway:
        # The per-store breakdown is for signed-in callers.
        body = gateway.post("{ health { components { name up } } }", {}, operator.headers).json()
        components = {c["name"]: c["up"] for c in data(body)["health"]["components"]}
        assert components["redis"] is True

        # login, resolve, list and logout run the session scripts and pipelines.
        token = gateway.login(operator)
        bearer = {"authorization": f"Bearer {token}"}
        mine = data(gateway.post("{ mySessions { id } }", {}, bearer).json())["mySessions"]
        (session_id,) = [s["id"] for s in mine]
        keys = [
            SESSION_KEY + hashlib.sha256(token.encode()).hexdigest(),
            SESSION_ID_KEY + session_id,
            USER_INDEX + operator.user_id,
        ]
        slots = {node.command("CLUSTER", "KEYSLOT", key) for key in keys}
        assert len(slots) == 1, "a session's keys share one slot"
        other = gateway.login(operator)
        revoke = "mutation($id: ID!) { revokeSession(input: {sessionId: $id}) { revoked } }"
        revoked = gateway.post(revoke, {"id": session_id}, {"authorization": f"Bearer {other}"})
        assert data(revoked.json())["revokeSession"]["revoked"] is True
        assert gateway.viewer_status(token) == 401
        assert gateway.viewer_status(other) == 200
        logout = gateway.post(
            "mutation { logout { loggedOut } }", {}, {"authorization": f"Bearer {other}"}
        )
        assert data(logout.json())["logout"]["loggedOut"] is True
        assert gateway.viewer_status(other) == 401

        with gateway.task_updates(operator) as ws:
            namespace = gateway.app.state.settings.events_namespace
            channel = f"{{{namespace}}}:{TASK_UPDATED_CHANNEL}"
            owner = next(
                n for n in cluster.nodes if n.command("PUBSUB", "SHARDNUMSUB", channel)[1] == 1
            )
            assert owner.command("PUBSUB", "NUMSUB", channel)[1] == 0, "sharded, not plain"
            assert gateway.created_title_arrives(ws, operator)


async def test_a_burst_beyond_the_pool_waits_for_a_connection(
    settings: Settings, cluster: ClusterSetup
) -> None:
    options = replace(settings.redis_options(), url=cluster.url, max_connections=2)
    # One hash slot: every command goes to the same node.
    key = "{test:pool}:" + secrets.token_hex(6)
    async with RedisStore(options) as store:
        client = store.cluster
        assert client is not None
        counts = await asyncio.gather(*(client.incr(key) for _ in range(40)))
        assert sorted(counts) == list(range(1, 41))
        pipelines = [client.pipeline() for _ in range(10)]
        for pipeline in pipelines:
            pipeline.incr(key)
            pipeline.get(key)
        replies = await asyncio.gather(*(pipeline.execute() for pipeline in pipelines))
        assert sorted(reply[0] for reply in replies) == list(range(41, 51))
        await client.delete(key)
