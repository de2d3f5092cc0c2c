"""Agent memories, and the search mode shared by every search field."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers.context import RequestContext
from schema.relay import encode_id, node_id_field
from schema.scalars import JSON
from stores.search import records

if TYPE_CHECKING:
    from schema.agents import Agent

Info = strawberry.Info[RequestContext, None]


@strawberry.enum(
    description="How a search ranks: by meaning, by words (any of them; more of them "
    "first), or by meaning with items holding every word lifted."
)
class SearchMode(enum.Enum):
    SEMANTIC = "semantic"
    KEYWORD = "keyword"
    HYBRID = "hybrid"

    def to_store(self) -> records.SearchMode:
        return records.SearchMode(self.value)


def pick_mode(mode: SearchMode | None, query: str | None) -> records.SearchMode:
    """HYBRID when there is a query text, SEMANTIC for a bare vector, unless told."""
    if mode is not None:
        return mode.to_store()
    return records.SearchMode.HYBRID if query else records.SearchMode.SEMANTIC


@strawberry.enum(description="What a memory holds.")
class MemoryKind(enum.Enum):
    EPISODIC = "episodic"
    SEMANTIC = "semantic"
    PROCEDURAL = "procedural"


@strawberry.type(description="Something an agent remembers.")
class Memory(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    content: str
    kind: MemoryKind
    importance: float
    context: JSON
    embedding_pending: bool = strawberry.field(
        description="True until its embedding is computed; meanwhile only keyword search finds it."
    )
    created_at: datetime
    agent_id: strawberry.Private[UUID]

    @classmethod
    def from_record(cls, memory: records.Memory) -> Memory:
        return cls(
            id=str(memory.id),
            _id=encode_id("Memory", memory.id),
            content=memory.content,
            kind=MemoryKind(memory.kind),
            importance=memory.importance,
            context=memory.context,
            embedding_pending=memory.embedding_pending,
            created_at=memory.created_at,
            agent_id=memory.agent_id,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Memory | None]:
        from resolvers.search import readable_memories

        ids: list[UUID | None] = []
        for node_id in node_ids:
            try:
                ids.append(UUID(node_id))
            except ValueError:
                ids.append(None)
        # Memories the caller may not read are null, as if they did not exist.
        found = await readable_memories(info.context, [i for i in ids if i])
        return [cls.from_record(found[i]) if i and i in found else None for i in ids]

    @strawberry.field(description="The agent this memory belongs to.")
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_id)


@strawberry.type(description="A recalled memory with its score and, for HYBRID, its ranks.")
class MemoryHit:
    memory: Memory
    score: float = strawberry.field(
        description="SEMANTIC: cosine similarity. KEYWORD: the share of the query's terms "
        "held. HYBRID: the similarity times a weight (0.7 unless configured), plus the "
        "rest of the weight when the item holds every term."
    )
    semantic_rank: int | None
    keyword_rank: int | None

    @classmethod
    def from_hit(cls, hit: records.SearchHit[records.Memory]) -> MemoryHit:
        return cls(
            memory=Memory.from_record(hit.item),
            score=hit.score,
            semantic_rank=hit.semantic_rank,
            keyword_rank=hit.keyword_rank,
        )
