from __future__ import annotations

from dataclasses import dataclass

# pgvector's own bounds for HNSW index options and the query-time candidate list.
MAX_M = 100
MAX_EF = 1000


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """HNSW index shape (`m`, `ef_construction`: used when indexes are (re)built),
    search effort (`ef_search`: per query, raised to the page depth when deeper), and
    HYBRID's fusion (see `stores.search.ranking`)."""

    m: int = 16
    ef_construction: int = 128
    ef_search: int = 100
    # Rows each side of a HYBRID search contributes before fusion.
    hybrid_candidates: int = 100
    # HYBRID's weight of cosine similarity; the keyword side gets the rest.
    semantic_weight: float = 0.7
    # A new task's possible duplicates: open tasks at least this similar (cosine).
    duplicate_threshold: float = 0.8
    # How long creating a task waits for its text's embedding when duplicates are asked.
    duplicate_embed_timeout_s: float = 2.0

    def __post_init__(self) -> None:
        if not 2 <= self.m <= MAX_M:
            raise ValueError(f"m must be 2 to {MAX_M}, got {self.m}")
        if not 2 * self.m <= self.ef_construction <= MAX_EF:
            raise ValueError(f"ef_construction must be 2*m to {MAX_EF}, got {self.ef_construction}")
        if not 1 <= self.ef_search <= MAX_EF:
            raise ValueError(f"ef_search must be 1 to {MAX_EF}, got {self.ef_search}")
        if not 1 <= self.hybrid_candidates <= MAX_EF:
            raise ValueError(f"hybrid_candidates must be 1 to {MAX_EF}")
        if not 0 <= self.semantic_weight <= 1:
            raise ValueError(f"semantic_weight must be 0 to 1, got {self.semantic_weight}")
        if not -1 <= self.duplicate_threshold <= 1:
            raise ValueError(f"duplicate_threshold must be -1 to 1, got {self.duplicate_threshold}")
        if self.duplicate_embed_timeout_s <= 0:
            raise ValueError("duplicate_embed_timeout_s must be positive")
