"""Resolved negotiations in the knowledge graph: which agents agreed, which tasks they
concern (projected from the outbox's `negotiation.resolved`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from stores.graph.queries import read_collected
from stores.ids import parse_id

if TYPE_CHECKING:
    from stores.graph.store import GraphStore


@dataclass(frozen=True, slots=True)
class ResolutionLinks:
    agent_ids: tuple[UUID, ...]
    task_ids: tuple[UUID, ...]


_LINKS = """
    UNWIND $ids AS id
    MATCH (n:Negotiation {id: id})
    CALL (n) {
        OPTIONAL MATCH (a:Agent)-[:AGREED_TO]->(n)
        WITH a ORDER BY a.id
        RETURN collect(a.id) AS agents
    }
    CALL (n) {
        OPTIONAL MATCH (n)-[:CONCERNS]->(t:Task)
        WITH t ORDER BY t.id
        RETURN collect(t.id) AS tasks
    }
    RETURN collect([id, agents, tasks]) AS rows
"""


async def resolutions_of(
    graph: GraphStore, negotiation_ids: Sequence[UUID]
) -> dict[UUID, ResolutionLinks]:
    """The graph's links of each resolved negotiation; absent until it is projected."""
    ids = list(dict.fromkeys(negotiation_ids))
    if not ids:
        return {}
    rows = await read_collected(graph, _LINKS, ids=[str(i) for i in ids])
    return {
        parse_id(negotiation_id): ResolutionLinks(
            tuple(parse_id(a) for a in agents), tuple(parse_id(t) for t in tasks)
        )
        for negotiation_id, agents, tasks in rows
    }
