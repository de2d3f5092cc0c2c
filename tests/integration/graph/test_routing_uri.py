"""`neo4j://` URIs (routing, as clusters and Aura need) work as `bolt://` ones do."""

from __future__ import annotations

from dataclasses import replace

from gateway.settings import Settings
from stores import GraphStore, PostgresStore
from tests.integration.graph.conftest import Seed
from tests.integration.graph.test_projection import agent_node, drain
from workers.projector import Projector


async def test_a_routing_uri_projects_and_reads(
    pg: PostgresStore, settings: Settings, seed: Seed
) -> None:
    options = settings.graph_options()
    routed = replace(options, uri=options.uri.replace("bolt://", "neo4j://", 1))
    assert routed.uri.startswith("neo4j://")
    async with GraphStore(routed) as graph:
        assert (await graph.probe()).up
        agent_id, _ = await seed.agent()
        await drain(Projector(pg, graph))
        assert await agent_node(graph, agent_id) is not None
