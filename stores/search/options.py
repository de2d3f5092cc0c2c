from __future__ import annotations

from dataclasses import dataclass

# pgvector's own bounds for HNSW index options and the query-time candidate list.
MAX_M = 100
MAX_EF = 1000


@dataclass(frozen=True, kw_only=True)
class SearchOptions:
    """HNSW index shape (`m`, `ef_construction`: used when indexes are (re)built) and
    search effort (`ef_search`: per query, raised to the page depth when deeper)."""

    m: int = 16
    ef_construction: int = 64
    ef_search: int = 100
    # Rows each side of a HYBRID search contributes before fusion.
    rrf_candidates: int = 100

    def __post_init__(self) -> None:
        if not 2 <= self.m <= MAX_M:
            raise ValueError(f"m must be 2 to {MAX_M}, got {self.m}")
        if not 2 * self.m <= self.ef_construction <= MAX_EF:
            raise ValueError(f"ef_construction must be 2*m to {MAX_EF}, got {self.ef_construction}")
        if not 1 <= self.ef_search <= MAX_EF:
            raise ValueError(f"ef_search must be 1 to {MAX_EF}, got {self.ef_search}")
        if not 1 <= self.rrf_candidates <= MAX_EF:
            raise ValueError(f"rrf_candidates must be 1 to {MAX_EF}")
