"""The knowledge graph: typed links between knowledge items, read in one round trip."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from stores.graph.queries import read_collected
from stores.ids import parse_id

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
    RETURN collect([id, type, other, outgoing]) AS rows
"""


async def related_of(
    graph: GraphStore, item_ids: Sequence[UUID]
) -> dict[UUID, list[KnowledgeLink]]:
    """Links of every item in `item_ids`, either direction, for all of them in one query."""
    ids = list(dict.fromkeys(item_ids))
    found: dict[UUID, list[KnowledgeLink]] = {item_id: [] for item_id in ids}
    if not ids:
        return found
    rows = await read_collected(
        graph, _RELATED, ids=[str(i) for i in ids], limit=MAX_LINKS_PER_ITEM
    )
    for item_id, link_type, other, outgoing in rows:
        found[parse_id(item_id)].append(KnowledgeLink(parse_id(other), link_type, outgoing))
    return found
