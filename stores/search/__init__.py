"""Knowledge items and agent memories, searched by meaning, by words, or both."""

from stores.search.options import SearchOptions
from stores.search.records import (
    EmbeddingSpace,
    KnowledgeFilter,
    KnowledgeInput,
    KnowledgeItem,
    KnowledgePatch,
    KnowledgeRelation,
    Memory,
    MemoryInput,
    SearchHit,
    SearchMode,
    SearchPage,
    SearchRequest,
)
from stores.search.space import EmbeddingSpaceMismatch, ensure_space, move_space, stored_space
from stores.search.store import SearchStore

__all__ = [
    "EmbeddingSpace",
    "EmbeddingSpaceMismatch",
    "KnowledgeFilter",
    "KnowledgeInput",
    "KnowledgeItem",
    "KnowledgePatch",
    "KnowledgeRelation",
    "Memory",
    "MemoryInput",
    "SearchHit",
    "SearchMode",
    "SearchOptions",
    "SearchPage",
    "SearchRequest",
    "SearchStore",
    "ensure_space",
    "move_space",
    "stored_space",
]
