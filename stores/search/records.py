"""Plain records and inputs of knowledge items, agent memories and searches."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from stores.embeddings import Vector
from stores.postgres.inputs import UNSET, Unset

T = TypeVar("T")

KNOWLEDGE_RELATION_TYPES = ("RELATES_TO", "SUPPORTS", "CONTRADICTS")
MEMORY_KINDS = ("episodic", "semantic", "procedural")


class SearchMode(enum.Enum):
    SEMANTIC = "semantic"
    KEYWORD = "keyword"
    HYBRID = "hybrid"


@dataclass(frozen=True, slots=True)
class KnowledgeItem:
    id: UUID
    title: str
    content: str
    source: str
    tags: tuple[str, ...]
    agent_id: UUID | None
    embedding_pending: bool
    created_at: datetime
    updated_at: datetime
    version: int

    @property
    def text(self) -> str:
        """What gets embedded: the title, then the content."""
        return embedding_text(self.title, self.content)


def embedding_text(title: str, content: str) -> str:
    return f"{title}\n{content}"


@dataclass(frozen=True, slots=True)
class KnowledgeRelation:
    source_id: UUID
    target_id: UUID
    type: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Memory:
    id: UUID
    agent_id: UUID
    content: str
    kind: str
    importance: float
    context: dict[str, Any]
    embedding_pending: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class SearchHit(Generic[T]):
    """One result: the record, its score (see `stores.search.ranking`), and
    its rank in each list that was fused (1-based; None when it was not in that list)."""

    item: T
    score: float
    semantic_rank: int | None
    keyword_rank: int | None


@dataclass(frozen=True, slots=True)
class SearchPage(Generic[T]):
    hits: list[SearchHit[T]]
    offset: int
    has_next_page: bool


@dataclass(frozen=True, slots=True)
class KnowledgeFilter:
    """Applied inside the search SQL, so a filtered search still returns `first` hits."""

    tags_any: tuple[str, ...] | None = None
    sources: tuple[str, ...] | None = None
    agent_ids: tuple[UUID, ...] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """`text` for KEYWORD and HYBRID; `vector` (given or embedded from `text`) for
    SEMANTIC and HYBRID."""

    mode: SearchMode
    text: str | None = None
    vector: Vector | None = None
    first: int = 10
    offset: int = 0
    filter: KnowledgeFilter = field(default_factory=KnowledgeFilter)


@dataclass(frozen=True, slots=True)
class KnowledgeInput:
    title: str
    content: str = ""
    source: str = ""
    tags: tuple[str, ...] = ()
    agent_id: UUID | None = None


@dataclass(frozen=True, slots=True)
class KnowledgePatch:
    title: str | Unset = UNSET
    content: str | Unset = UNSET
    source: str | Unset = UNSET
    tags: tuple[str, ...] | Unset = UNSET
    agent_id: UUID | Unset | None = UNSET

    @property
    def changes_text(self) -> bool:
        return not (isinstance(self.title, Unset) and isinstance(self.content, Unset))


@dataclass(frozen=True, slots=True)
class MemoryInput:
    agent_id: UUID
    content: str
    kind: str = "episodic"
    importance: float = 0.5
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmbeddingSpace:
    """The model and dimension the stored vectors were made with."""

    model: str
    dimension: int
