"""Search over knowledge, memories and tasks: repositories on the PostgreSQL store's pool."""

from __future__ import annotations

from stores.postgres import PostgresStore
from stores.search.knowledge import KnowledgeRepository
from stores.search.memories import MemoryRepository
from stores.search.messages import MessageRepository
from stores.search.options import SearchOptions
from stores.search.tasks import TaskSearchRepository


class SearchStore:
    """Borrows the PostgreSQL store's connections (it opens no pool of its own, so it
    has nothing to open or close); `knowledge`, `memories`, `tasks` and `messages` hold
    the queries."""

    __slots__ = ("knowledge", "memories", "messages", "options", "postgres", "tasks")

    def __init__(self, postgres: PostgresStore, options: SearchOptions | None = None) -> None:
        self.postgres = postgres
        self.options = options or SearchOptions()
        self.knowledge = KnowledgeRepository(self)
        self.memories = MemoryRepository(self)
        self.tasks = TaskSearchRepository(self)
        self.messages = MessageRepository(self)

    def ef_search_for(self, depth: int) -> int:
        """The HNSW candidate list for a page reaching `depth` rows deep."""
        return min(max(self.options.ef_search, depth), 1000)
