"""Search over knowledge and memories: repositories on the PostgreSQL store's pool."""

from __future__ import annotations

from stores.postgres import PostgresStore
from stores.search.knowledge import KnowledgeRepository
from stores.search.memories import MemoryRepository
from stores.search.messages import MessageRepository
from stores.search.options import SearchOptions


class SearchStore:
    """Borrows the PostgreSQL store's connections (it opens no pool of its own, so it
    has nothing to open or close); `knowledge`, `memories` and `messages` hold the queries."""

    __slots__ = ("knowledge", "memories", "messages", "options", "postgres")

    def __init__(self, postgres: PostgresStore, options: SearchOptions | None = None) -> None:
        self.postgres = postgres
        self.options = options or SearchOptions()
        self.knowledge = KnowledgeRepository(self)
        self.memories = MemoryRepository(self)
        self.messages = MessageRepository(self)

    def ef_search_for(self, depth: int) -> int:
        """The HNSW candidate list for a page reaching `depth` rows deep."""
        return min(max(self.options.ef_search, depth), 1000)
