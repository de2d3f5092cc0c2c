"""Tasks found by meaning and by words: `searchTasks`, `similarTasks`, and the edges
`createTask { possibleDuplicates }` returns."""

from __future__ import annotations

import strawberry
from strawberry import relay

from resolvers import task_search as resolve
from resolvers.context import RequestContext
from schema.inputs import TaskFilter
from schema.memories import SearchMode, pick_mode
from schema.relay import decode_id
from schema.search import decode_cursor, encode_cursor
from schema.tasks import Task
from stores.postgres import records
from stores.postgres.inputs import TaskFilter as StoreTaskFilter
from stores.search import SearchHit, SearchPage

Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="One task found: the task, its score and, for HYBRID, its ranks.")
class TaskSearchEdge:
    cursor: str
    node: Task
    score: float = strawberry.field(
        description="As in `searchKnowledge`: SEMANTIC cosine similarity, KEYWORD the share "
        "of the query's terms held, HYBRID both weighted."
    )
    semantic_rank: int | None = strawberry.field(description="Rank by meaning (1 is best).")
    keyword_rank: int | None = strawberry.field(description="Rank by words (1 is best).")

    @classmethod
    def from_hit(cls, hit: SearchHit[records.Task], position: int) -> TaskSearchEdge:
        return cls(
            cursor=encode_cursor(position),
            node=Task.from_record(hit.item),
            score=hit.score,
            semantic_rank=hit.semantic_rank,
            keyword_rank=hit.keyword_rank,
        )


def edges(hits: list[SearchHit[records.Task]], offset: int = 0) -> list[TaskSearchEdge]:
    return [TaskSearchEdge.from_hit(hit, offset + index) for index, hit in enumerate(hits)]


@strawberry.type(description="A page of tasks found, best first.")
class TaskSearchConnection:
    edges: list[TaskSearchEdge]
    page_info: relay.PageInfo

    @classmethod
    def from_page(cls, page: SearchPage[records.Task]) -> TaskSearchConnection:
        found = edges(page.hits, page.offset)
        return cls(
            edges=found,
            page_info=relay.PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.offset > 0,
                start_cursor=found[0].cursor if found else None,
                end_cursor=found[-1].cursor if found else None,
            ),
        )


def _filter(filter: TaskFilter | None) -> StoreTaskFilter:
    return (filter or TaskFilter()).to_store()


@strawberry.type
class TaskSearchQuery:
    @strawberry.field(
        description="Tasks by their title and description, ranked by meaning (SEMANTIC), "
        "by words (KEYWORD) or both (HYBRID, the default with a query), as `searchKnowledge` "
        "ranks knowledge; `filter` is the `tasks` list's. A task just created or edited is "
        "found by words at once, and by meaning once the background has embedded its text."
    )
    async def search_tasks(
        self,
        info: Info,
        query: str | None = None,
        vector: list[float] | None = None,
        mode: SearchMode | None = None,
        filter: TaskFilter | None = None,
        first: int = 10,
        after: str | None = None,
    ) -> TaskSearchConnection:
        page = await resolve.search_tasks(
            info.context,
            mode=pick_mode(mode, query),
            text=query,
            vector=vector,
            filter=_filter(filter),
            first=first,
            offset=decode_cursor(after),
        )
        return TaskSearchConnection.from_page(page)

    @strawberry.field(
        description="The tasks nearest to one task by meaning; empty while its embedding "
        "is pending."
    )
    async def similar_tasks(
        self,
        info: Info,
        id: relay.GlobalID,
        first: int = 10,
        filter: TaskFilter | None = None,
    ) -> list[TaskSearchEdge]:
        task_id = decode_id(id, "Task", field="id")
        return edges(await resolve.similar_tasks(info.context, task_id, first, _filter(filter)))
