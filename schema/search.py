"""Knowledge items, the knowledge graph around them, and searching them."""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers import search as resolve
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from schema.federation import ENTITY_KEY, entity_by_reference
from schema.memories import SearchMode, pick_mode
from schema.relay import decode_id, encode_id, node_id_field, nodes_by_ids
from stores.search import records

if TYPE_CHECKING:
    from schema.agents import Agent

Info = strawberry.Info[RequestContext, None]

_CURSOR_PREFIX = "search:"


@strawberry.enum(description="How two knowledge items are linked in the knowledge graph.")
class KnowledgeRelationType(enum.Enum):
    RELATES_TO = "RELATES_TO"
    SUPPORTS = "SUPPORTS"
    CONTRADICTS = "CONTRADICTS"


@strawberry.type(description="A link in the knowledge graph, seen from one of its ends.")
class KnowledgeLink:
    type: KnowledgeRelationType
    outgoing: bool = strawberry.field(description="True when this item is the link's source.")
    item_id: strawberry.Private[UUID]

    @strawberry.field
    async def item(self, info: Info) -> Knowledge | None:
        return await Knowledge.load(info, self.item_id)


@strawberry.type(description="A piece of knowledge an agent discovered.", directives=[ENTITY_KEY])
class Knowledge(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    title: str
    content: str
    source: str
    tags: list[str]
    embedding_pending: bool = strawberry.field(
        description="True until its embedding is computed; meanwhile only keyword search finds it."
    )
    created_at: datetime
    updated_at: datetime
    version: int = strawberry.field(description="Send it back as `expectedVersion` to update.")
    record: strawberry.Private[records.KnowledgeItem]

    @classmethod
    def from_record(cls, item: records.KnowledgeItem) -> Knowledge:
        return cls(
            id=str(item.id),
            _id=encode_id("Knowledge", item.id),
            title=item.title,
            content=item.content,
            source=item.source,
            tags=list(item.tags),
            embedding_pending=item.embedding_pending,
            created_at=item.created_at,
            updated_at=item.updated_at,
            version=item.version,
            record=item,
        )

    @classmethod
    async def load(cls, info: Info, item_id: UUID | None) -> Knowledge | None:
        if item_id is None:
            return None
        found = await info.context.loaders.knowledge_by_id.load(item_id)
        return cls.from_record(found) if found else None

    @classmethod
    async def resolve_reference(cls, info: Info, id: str) -> Knowledge | None:
        return await entity_by_reference(cls, info, id)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Knowledge | None]:
        return await nodes_by_ids(info.context.loaders.knowledge_by_id, node_ids, cls.from_record)

    @strawberry.field(description="The agent that discovered it.")
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.record.agent_id)

    @strawberry.field(
        description="Items linked to this one in the knowledge graph (Neo4j: RELATES_TO, "
        "SUPPORTS, CONTRADICTS, either direction; one query for a whole page)."
    )
    async def related(self, info: Info) -> list[KnowledgeLink] | None:
        links = await info.context.loaders.related_knowledge_by_id.load(self.record.id)
        return [
            KnowledgeLink(
                type=KnowledgeRelationType(link.type), outgoing=link.outgoing, item_id=link.item_id
            )
            for link in links
        ]


@strawberry.input(description="Narrows a search; applied inside the search, not after it.")
class KnowledgeSearchFilter:
    tags_any: list[str] | None = strawberry.field(default=None, description="Any of these tags.")
    sources: list[str] | None = None
    agent_ids: list[relay.GlobalID] | None = strawberry.field(
        default=None, description="Discovered by one of these agents."
    )
    created_after: datetime | None = None
    created_before: datetime | None = None

    def to_store(self) -> records.KnowledgeFilter:
        return records.KnowledgeFilter(
            tags_any=tuple(self.tags_any) if self.tags_any is not None else None,
            sources=tuple(self.sources) if self.sources is not None else None,
            agent_ids=(
                tuple(decode_id(i, "Agent", field="filter.agentIds") for i in self.agent_ids)
                if self.agent_ids is not None
                else None
            ),
            created_after=self.created_after,
            created_before=self.created_before,
        )


@strawberry.type(description="One search result: the item, its score and, for HYBRID, its ranks.")
class KnowledgeSearchEdge:
    cursor: str
    node: Knowledge
    score: float = strawberry.field(
        description="SEMANTIC: cosine similarity. KEYWORD: the share of the query's terms "
        "held. HYBRID: the similarity times a weight (0.7 unless configured), plus the "
        "rest of the weight when the item holds every term."
    )
    semantic_rank: int | None = strawberry.field(description="Rank by meaning (1 is best).")
    keyword_rank: int | None = strawberry.field(description="Rank by words (1 is best).")

    @classmethod
    def from_hit(
        cls, hit: records.SearchHit[records.KnowledgeItem], position: int
    ) -> KnowledgeSearchEdge:
        return cls(
            cursor=encode_cursor(position),
            node=Knowledge.from_record(hit.item),
            score=hit.score,
            semantic_rank=hit.semantic_rank,
            keyword_rank=hit.keyword_rank,
        )


@strawberry.type(description="A page of search results, best first.")
class KnowledgeSearchConnection:
    edges: list[KnowledgeSearchEdge]
    page_info: relay.PageInfo

    @classmethod
    def from_page(
        cls, page: records.SearchPage[records.KnowledgeItem]
    ) -> KnowledgeSearchConnection:
        edges = [
            KnowledgeSearchEdge.from_hit(hit, page.offset + index)
            for index, hit in enumerate(page.hits)
        ]
        return cls(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.offset > 0,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


def encode_cursor(position: int) -> str:
    """Results are ranked, not keyed: a cursor is a position in the ranking."""
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{position}".encode()).decode()


def decode_cursor(cursor: str | None) -> int:
    """The offset just past `cursor`'s result."""
    if cursor is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor.encode()).decode()
        if text.startswith(_CURSOR_PREFIX):
            return int(text.removeprefix(_CURSOR_PREFIX)) + 1
    except (binascii.Error, ValueError, UnicodeDecodeError):
        pass
    raise ClientError(
        ErrorCode.BAD_USER_INPUT,
        "after: is not a search cursor; pass an edge's cursor from a previous page",
        field="after",
    )


@strawberry.type
class SearchQuery:
    @strawberry.field(
        description="Knowledge ranked by meaning (SEMANTIC), by words (KEYWORD: items "
        'holding any word of the query, more of them first; `"a phrase"` and `-word` '
        "work) or both (HYBRID, the default with a query: meaning, with items holding every "
        "word lifted). Pass `vector` to search with your own embedding."
    )
    async def search_knowledge(
        self,
        info: Info,
        query: str | None = None,
        vector: list[float] | None = None,
        mode: SearchMode | None = None,
        filter: KnowledgeSearchFilter | None = None,
        first: int = 10,
        after: str | None = None,
    ) -> KnowledgeSearchConnection:
        page = await resolve.search_knowledge(
            info.context,
            mode=pick_mode(mode, query),
            text=query,
            vector=vector,
            filter=filter.to_store() if filter else records.KnowledgeFilter(),
            first=first,
            offset=decode_cursor(after),
        )
        return KnowledgeSearchConnection.from_page(page)

    @strawberry.field(description="The items nearest to one item by meaning.")
    async def similar_knowledge(
        self,
        info: Info,
        id: relay.GlobalID,
        first: int = 10,
        filter: KnowledgeSearchFilter | None = None,
    ) -> list[KnowledgeSearchEdge]:
        item_id = decode_id(id, "Knowledge", field="id")
        hits = await resolve.similar_knowledge(
            info.context,
            item_id,
            first,
            filter.to_store() if filter else records.KnowledgeFilter(),
        )
        for hit in hits:
            info.context.loaders.knowledge_by_id.prime(hit.item.id, hit.item)
        return [KnowledgeSearchEdge.from_hit(hit, index) for index, hit in enumerate(hits)]
