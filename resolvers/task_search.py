"""Tasks found by meaning and by words: the permission of the `tasks` list (any
signed-in viewer), knowledge search's query checks, and a new task's duplicates."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.search import embedder, query_vector, search_store
from stores.embeddings import EmbeddingUnavailable
from stores.postgres.inputs import TaskFilter
from stores.postgres.records import Task
from stores.search import SearchHit, SearchMode, SearchPage
from stores.search.records import embedding_text


async def search_tasks(
    ctx: RequestContext,
    *,
    mode: SearchMode,
    text: str | None,
    vector: Sequence[float] | None,
    filter: TaskFilter,
    first: int,
    offset: int,
) -> SearchPage[Task]:
    require(ctx.principal, at_least=Role.VIEWER)
    text, checked = await query_vector(ctx, mode, text, vector)
    page = await search_store(ctx).tasks.search(
        mode=mode, text=text, vector=checked, filter=filter, first=first, offset=offset
    )
    _prime(ctx, page.hits)
    return page


async def similar_tasks(
    ctx: RequestContext, task_id: UUID, first: int, filter: TaskFilter
) -> list[SearchHit[Task]]:
    require(ctx.principal, at_least=Role.VIEWER)
    hits = await search_store(ctx).tasks.similar(task_id, first, filter)
    _prime(ctx, hits)
    return hits


def embedding_wanted(ctx: RequestContext) -> None:
    """A task was written pending: the background filler embeds it."""
    filler = ctx.stores.embedding_filler
    if filler is not None:
        filler.wake()


async def possible_duplicates(ctx: RequestContext, task: Task, first: int) -> list[SearchHit[Task]]:
    """Open tasks at least `duplicate_threshold` similar to a task just created.

    The task is already written; this embeds its one text now, bounded by
    `duplicate_embed_timeout_s`, and stores the vector as the task's own, so the
    filler has nothing left to do for it: one embedding per task either way. On
    failure or timeout the task stays pending for the filler, and the caller gets
    STORE_UNAVAILABLE on this field only.
    """
    require(ctx.principal, at_least=Role.VIEWER)
    store = search_store(ctx)
    text = embedding_text(task.title, task.description)
    try:
        async with asyncio.timeout(store.options.duplicate_embed_timeout_s):
            (vector,) = await embedder(ctx).embed([text])
    except TimeoutError as exc:
        embedding_wanted(ctx)
        raise EmbeddingUnavailable(
            f"no embedding within {store.options.duplicate_embed_timeout_s} s; "
            "the task is saved and will be embedded in the background"
        ) from exc
    except EmbeddingUnavailable:
        embedding_wanted(ctx)
        raise
    await store.tasks.fill([(task.id, text, vector)])
    hits = await store.tasks.duplicates(
        task.id, vector, first=first, min_score=store.options.duplicate_threshold
    )
    _prime(ctx, hits)
    return hits


def _prime(ctx: RequestContext, hits: Sequence[SearchHit[Task]]) -> None:
    for hit in hits:
        ctx.loaders.task_by_id.prime(hit.item.id, hit.item)
