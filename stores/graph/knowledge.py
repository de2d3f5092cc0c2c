"""The knowledge graph: typed links between knowledge items, read in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from uuid import UUID

import neo4j
from neo4j import AsyncManagedTransaction

from stores import roundtrips
from stores.graph.queries import translate_errors

if TYPE_CHECKING:
    from stores.graph.store import GraphStore

KNOWLEDGE_LINK_TYPES = ("RELATES_TO", "SUPPORTS", "CONTRADICTS")
MAX_LINKS_PER_ITEM = 100


@dataclass(frozen=True, slots=True)
class KnowledgeLink:
    """A link seen from one item: the other end, the type, and which way it points."""

    item_id: UUID
    type: str
    outgoing: bool


_RELATED = """
    UNWIND $ids AS id
    MATCH (k:Knowledge {id: id})
    CALL (k) {
        MATCH (k)-[r:RELATES_TO|SUPPORTS|CONTRADICTS]-(other:Knowledge)
        RETURN type(r) AS type, other.id AS other, startNode(r) = k AS outgoing
        ORDER BY type, other
        LIMIT $limit
    }
    RETURN id, type, other, outgoing
"""


async def related_of(
    graph: GraphStore, item_ids: Sequence[UUID]
) -> dict[UUID, list[KnowledgeLink]]:
    """Links of every item in `item_ids`, either direction, for all of them in one query."""
    ids = list(dict.fromkeys(item_ids))
    found: dict[UUID, list[KnowledgeLink]] = {item_id: [] for item_id in ids}
    if not ids:
        return found
    timeout = graph.query_timeout
    roundtrips.record("neo4j")
    async with graph.session() as session, translate_errors(timeout):
        work = neo4j.unit_of_work(timeout=timeout)(_fetch)
        rows = await session.execute_read(
            work, {"ids": [str(i) for i in ids], "limit": MAX_LINKS_PER_ITEM}
        )
    for row in rows:
        found[UUID(row["id"])].append(
            KnowledgeLink(UUID(row["other"]), row["type"], row["outgoing"])
        )
    return found


async def _fetch(tx: AsyncManagedTransaction, params: dict[str, Any]) -> list[dict[str, Any]]:
    result = await tx.run(_RELATED, params)
    return await result.data()
