"""Queries served by a real streaming replica of the test stack's PostgreSQL.

Which server answered shows in `X-Round-Trips` (statements on a replica count as
`postgres-replica`) and in `pg_is_in_recovery()`. Replay is paused on the standby
to make lag certain rather than hoped for. The tests run in file order (the last
one stops the standby).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from gateway.app import create_app
from gateway.settings import Settings
from stores.postgres.replicas import ReplicaSet, replica_reads
from tests.integration.api.conftest import Caller, GraphQL, _make_caller, data, unique
from tests.integration.api.test_prometheus import samples
from tests.support.pg_replica import Standby, streaming_replica, wait_for

CREATE = """
mutation Create($input: CreateAgentInput!) {
  createAgent(input: $input) { agent { id } userErrors { field message } }
}
"""
NODE = "query($id: ID!) { node(id: $id) { ... on Agent { id name } } }"
COUNT = "query { agents(first: 1) { totalCount } }"
HEALTH = "query { health { status components { name up error } } }"
REPLICA = "postgres-replica"
TOKEN = "replica-scraper"


@pytest.fixture(scope="module")
def standby(settings: Settings, client: TestClient) -> Iterator[Standby]:
    # `client` first: its lifespan migrates the database the standby copies.
    with streaming_replica(settings.postgres_dsn.get_secret_value()) as server:
        yield server


def gateway(settings: Settings, standby: Standby, **more: Any) -> TestClient:
    primary = settings.postgres_dsn.get_secret_value()
    return TestClient(
        create_app(
            settings.model_copy(
                update={
                    "postgres_replica_dsns": [SecretStr(standby.dsn(primary))],
                    # A replica whose last check is older than three intervals is
                    # skipped: the default's 3 s outlasts a loaded machine's stalls.
                    "postgres_replica_check_interval_s": 1.0,
                    # Far past any stall of a loaded machine, unless a test wants it small.
                    "postgres_replica_max_lag_s": 600.0,
                    **more,
                }
            )
        )
    )


def replicas_of(client: TestClient) -> ReplicaSet:
    replicas = client.app.state.stores.postgres.replicas  # type: ignore[attr-defined]
    assert isinstance(replicas, ReplicaSet)
    return replicas


def wait_until_serving(client: TestClient) -> None:
    replicas = replicas_of(client)
    wait_for(lambda: replicas.pick(None) is not None, "the replica serves reads")


def caller(settings: Settings, role: str) -> Caller:
    return asyncio.run(_make_caller(settings, role))


def create_agent(gql: GraphQL, author: Caller) -> str:
    payload = data(gql(CREATE, {"input": {"name": unique("replicated")}}, caller=author))
    assert payload["createAgent"]["userErrors"] == []
    agent_id: str = payload["createAgent"]["agent"]["id"]
    return agent_id


def replica_component(gql: GraphQL, viewer: Caller) -> dict[str, Any]:
    components = data(gql(HEALTH, caller=viewer))["health"]["components"]
    (found,) = [c for c in components if c["name"] == REPLICA]
    return found  # type: ignore[no-any-return]


def test_queries_are_served_by_the_replica(settings: Settings, standby: Standby) -> None:
    viewer = caller(settings, "viewer")
    with gateway(settings, standby, prometheus_token=SecretStr(TOKEN)) as client:
        gql = GraphQL(client)
        wait_until_serving(client)
        assert data(gql(COUNT, caller=viewer))["agents"]["totalCount"] >= 0
        assert gql.last_round_trips.get(REPLICA, 0) >= 1
        # Mutations, and the session lookup, stay on the primary.
        assert gql.last_round_trips["postgres"] >= 1

        async def in_recovery() -> object:
            async def no_floor() -> None:
                return None

            postgres = client.app.state.stores.postgres  # type: ignore[attr-defined]
            with replica_reads(no_floor):
                async with postgres.read_connection() as conn:
                    return await conn.fetchval("SELECT pg_is_in_recovery()")

        assert client.portal.call(in_recovery) is True  # type: ignore[union-attr]
        component = replica_component(gql, viewer)
        assert component["up"] is True and component["error"] is None

        page = client.get("/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
        seen = samples(page)
        assert seen[("polygraph_store_calls_total", (("store", REPLICA),))] >= 1
        for role, server in (("primary", "postgres"), ("replica", REPLICA)):
            labels = (("role", role), ("server", server), ("store", "postgres"))
            assert seen[("polygraph_store_pool_max_connections", labels)] > 0


def test_a_writer_reads_its_write_at_once(settings: Settings, standby: Standby) -> None:
    operator = caller(settings, "operator")
    with gateway(settings, standby) as client:
        gql = GraphQL(client)
        wait_until_serving(client)
        agent_id = create_agent(gql, operator)
        assert data(gql(NODE, {"id": agent_id}, caller=operator))["node"]["id"] == agent_id


def test_while_the_replica_lags_a_writer_reads_from_the_primary(
    settings: Settings, standby: Standby
) -> None:
    operator, viewer = caller(settings, "operator"), caller(settings, "viewer")
    with gateway(settings, standby) as client:
        gql = GraphQL(client)
        wait_until_serving(client)
        standby.pause_replay()
        try:
            agent_id = create_agent(gql, operator)
            # Its author sees it, from the primary: the replica has not replayed it.
            assert data(gql(NODE, {"id": agent_id}, caller=operator))["node"]["id"] == agent_id
            assert gql.last_round_trips.get(REPLICA, 0) == 0
            # Someone who did not write reads the replica, which is behind (by design:
            # within the lag bound, others may read a moment into the past).
            assert data(gql(NODE, {"id": agent_id}, caller=viewer))["node"] is None
            assert gql.last_round_trips.get(REPLICA, 0) >= 1
        finally:
            standby.resume_replay()
        standby.caught_up_with_primary()
        replica = replicas_of(client).replicas[0]
        target = replica.replayed or 0
        # Once the replica has replayed the write, its author reads from it again.
        wait_for(
            lambda: (
                (gql(NODE, {"id": agent_id}, caller=operator).get("data") or {}).get("node")
                is not None
                and gql.last_round_trips.get(REPLICA, 0) >= 1
            ),
            f"the author reads its write from the replica (replayed at least {target})",
        )


def test_a_replica_past_the_lag_bound_is_skipped_and_reported(
    settings: Settings, standby: Standby
) -> None:
    operator, viewer = caller(settings, "operator"), caller(settings, "viewer")
    with gateway(settings, standby, postgres_replica_max_lag_s=0.5) as client:
        gql = GraphQL(client)
        wait_until_serving(client)
        standby.pause_replay()
        try:
            # Something to replay, so the paused replica falls behind.
            create_agent(gql, operator)
            wait_for(
                lambda: "lagging" in (replica_component(gql, viewer)["error"] or ""),
                "health reports the replica lagging",
            )
            assert data(gql(HEALTH, caller=viewer))["health"]["status"] == "MODERATE"
            assert data(gql(COUNT, caller=viewer))["agents"]["totalCount"] >= 1
            assert gql.last_round_trips.get(REPLICA, 0) == 0
        finally:
            standby.resume_replay()
        wait_for(lambda: replica_component(gql, viewer)["up"] is True, "the replica is back")


def test_a_stopped_replica_is_skipped_and_reads_go_to_the_primary(
    settings: Settings, standby: Standby
) -> None:
    viewer = caller(settings, "viewer")
    with gateway(settings, standby) as client:
        gql = GraphQL(client)
        wait_until_serving(client)
        data(gql(COUNT, caller=viewer))
        assert gql.last_round_trips.get(REPLICA, 0) >= 1
        standby.stop()
        assert data(gql(COUNT, caller=viewer))["agents"]["totalCount"] >= 0
        assert gql.last_round_trips.get(REPLICA, 0) == 0
        wait_for(lambda: replica_component(gql, viewer)["up"] is False, "health reports it down")
        assert data(gql(HEALTH, caller=viewer))["health"]["status"] == "MODERATE"
        assert data(gql(COUNT, caller=viewer))["agents"]["totalCount"] >= 0
