"""Knowledge and memory: who may write them, how their text becomes a vector, and
how a search's arguments become a store request."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from uuid import UUID

from resolvers.agent_grants import is_operator, require_acts_as
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from stores.embeddings import Embedder, EmbeddingUnavailable, Vector, check_vector
from stores.search import (
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
    SearchStore,
)
from stores.search.records import embedding_text

logger = logging.getLogger(__name__)

MAX_QUERY_LENGTH = 2000


def search_store(ctx: RequestContext) -> SearchStore:
    if ctx.stores.search is None:
        raise RuntimeError("no search store: pass `search=` to `Stores` in create_app")
    return ctx.stores.search


def embedder(ctx: RequestContext) -> Embedder:
    if ctx.stores.embedder is None:
        raise RuntimeError("no embedder: pass `embedder=` to `Stores` in create_app")
    return ctx.stores.embedder


def client_vector(ctx: RequestContext, vector: Sequence[float] | None) -> Vector | None:
    """A vector a client sent, checked against the gateway's dimension."""
    if vector is None:
        return None
    return check_vector(vector, embedder(ctx).dimension, field="vector")


async def query_vector(
    ctx: RequestContext, mode: SearchMode, text: str | None, vector: Sequence[float] | None
) -> tuple[str | None, Vector | None]:
    """The checked query text and vector a search in `mode` needs. Text is embedded
    through the request's loader, so one text costs one embedding per request."""
    if text is not None:
        text = text.strip()
        if len(text) > MAX_QUERY_LENGTH:
            raise _bad("query", f"must be at most {MAX_QUERY_LENGTH} characters")
    given = client_vector(ctx, vector)
    if mode is not SearchMode.SEMANTIC and not text:
        raise _bad("query", f"{mode.name} search needs a `query` text")
    if mode is SearchMode.KEYWORD:
        return text, None
    if given is not None:
        return text, given
    if not text:
        raise _bad("query", "SEMANTIC search needs a `query` text or a `vector`")
    return text, await ctx.loaders.embedding_by_query_text.load(text)


async def search_knowledge(
    ctx: RequestContext,
    *,
    mode: SearchMode,
    text: str | None,
    vector: Sequence[float] | None,
    filter: KnowledgeFilter,
    first: int,
    offset: int,
) -> SearchPage[KnowledgeItem]:
    require(ctx.principal, at_least=Role.VIEWER)
    text, checked = await query_vector(ctx, mode, text, vector)
    page = await search_store(ctx).knowledge.search(
        SearchRequest(
            mode=mode, text=text, vector=checked, first=first, offset=offset, filter=filter
        )
    )
    for hit in page.hits:
        ctx.loaders.knowledge_by_id.prime(hit.item.id, hit.item)
    return page


async def similar_knowledge(
    ctx: RequestContext, item_id: UUID, first: int, filter: KnowledgeFilter
) -> list[SearchHit[KnowledgeItem]]:
    require(ctx.principal, at_least=Role.VIEWER)
    return await search_store(ctx).knowledge.similar(item_id, first, filter)


async def embed_for_write(ctx: RequestContext, text: str) -> Vector | None:
    """The text's vector, or None when the embedder fails: the write goes ahead with
    its embedding pending, and the background filler is told."""
    try:
        (vector,) = await embedder(ctx).embed([text])
    except EmbeddingUnavailable as exc:
        logger.warning("embedding left pending: %s", exc)
        return None
    return vector


def _pending_written(ctx: RequestContext, pending: bool) -> None:
    filler = ctx.stores.embedding_filler
    if pending and filler is not None:
        filler.wake()


async def create_knowledge(
    ctx: RequestContext,
    data: KnowledgeInput,
    vector: Sequence[float] | None,
    *,
    idempotency_key: str | None,
) -> KnowledgeItem:
    require(ctx.principal, at_least=Role.OPERATOR)
    given = client_vector(ctx, vector)
    embedding = given or await embed_for_write(ctx, embedding_text(data.title, data.content))
    item = await search_store(ctx).knowledge.create(
        ctx.write_context(idempotency_key), data, embedding
    )
    _pending_written(ctx, item.embedding_pending)
    return item


async def update_knowledge(
    ctx: RequestContext,
    item_id: UUID,
    patch: KnowledgePatch,
    vector: Sequence[float] | None,
    *,
    expected_version: int | None,
    idempotency_key: str | None = None,
) -> KnowledgeItem:
    require(ctx.principal, at_least=Role.OPERATOR)
    store = search_store(ctx).knowledge
    embedding = client_vector(ctx, vector)
    if embedding is None and patch.changes_text:
        current = (await store.by_ids([item_id])).get(item_id)
        if current is not None:
            title = patch.title if isinstance(patch.title, str) else current.title
            content = patch.content if isinstance(patch.content, str) else current.content
            embedding = await embed_for_write(ctx, embedding_text(title, content))
    item = await store.update(
        ctx.write_context(idempotency_key),
        item_id,
        patch,
        embedding,
        expected_version=expected_version,
    )
    _pending_written(ctx, item.embedding_pending)
    return item


async def delete_knowledge(
    ctx: RequestContext,
    item_id: UUID,
    *,
    expected_version: int | None,
    idempotency_key: str | None = None,
) -> KnowledgeItem:
    require(ctx.principal, at_least=Role.OPERATOR)
    return await search_store(ctx).knowledge.delete(
        ctx.write_context(idempotency_key), item_id, expected_version=expected_version
    )


async def relate_knowledge(
    ctx: RequestContext,
    source_id: UUID,
    target_id: UUID,
    type: str,
    *,
    idempotency_key: str | None,
) -> KnowledgeRelation:
    require(ctx.principal, at_least=Role.OPERATOR)
    return await search_store(ctx).knowledge.relate(
        ctx.write_context(idempotency_key), source_id, target_id, type
    )


async def unrelate_knowledge(
    ctx: RequestContext,
    source_id: UUID,
    target_id: UUID,
    type: str,
    *,
    idempotency_key: str | None = None,
) -> bool:
    require(ctx.principal, at_least=Role.OPERATOR)
    return await search_store(ctx).knowledge.unrelate(
        ctx.write_context(idempotency_key), source_id, target_id, type
    )


async def _require_operator_or_memory_owner(ctx: RequestContext, agent_id: UUID) -> None:
    # An agent may keep and drop its own memories; anyone else needs an operator.
    await require_acts_as(ctx.stores, ctx.principal, agent_id, doing="keeping an agent's memories")


async def remember_memory(
    ctx: RequestContext,
    data: MemoryInput,
    vector: Sequence[float] | None,
    *,
    idempotency_key: str | None,
) -> Memory:
    await _require_operator_or_memory_owner(ctx, data.agent_id)
    embedding = client_vector(ctx, vector) or await embed_for_write(ctx, data.content)
    memory = await search_store(ctx).memories.remember(
        ctx.write_context(idempotency_key), data, embedding
    )
    _pending_written(ctx, memory.embedding_pending)
    return memory


async def forget_memory(
    ctx: RequestContext, memory_id: UUID, *, idempotency_key: str | None = None
) -> Memory:
    store = search_store(ctx).memories
    found = (await store.by_ids([memory_id])).get(memory_id)
    if found is None:
        # Gone (or never there): the store answers NOT_FOUND, or replays this caller's
        # own first answer, which an agent retrying its own forget must get.
        require(ctx.principal, at_least=Role.AGENT)
    else:
        await _require_operator_or_memory_owner(ctx, found.agent_id)
    return await store.forget(ctx.write_context(idempotency_key), memory_id)


async def may_read_memories(ctx: RequestContext, agent_id: UUID) -> bool:
    """An agent's memories are for the agent itself (a session bound to it), the users
    allowed to act as it (a grant), and operators and admins; not for other viewers."""
    principal = ctx.principal
    if principal.role is None or principal.user_id is None:
        return False
    if is_operator(principal) or principal.agent_id == agent_id:
        return True
    return await ctx.loaders.grant_by_user_and_agent.load((principal.user_id, agent_id))


async def require_memory_reader(ctx: RequestContext, agent_id: UUID) -> None:
    require(ctx.principal, at_least=Role.VIEWER)
    if not await may_read_memories(ctx, agent_id):
        raise ClientError(
            ErrorCode.FORBIDDEN,
            "An agent's memories are for the agent itself, users allowed to act as it,"
            " operators and admins.",
        )


async def readable_memories(ctx: RequestContext, ids: Sequence[UUID]) -> dict[UUID, Memory]:
    """The memories of `ids` the caller may read; others read as missing, so ids
    cannot be probed."""
    found = await search_store(ctx).memories.by_ids(list(ids))
    agents = list({memory.agent_id for memory in found.values()})
    allowed = await asyncio.gather(*(may_read_memories(ctx, agent_id) for agent_id in agents))
    readable = {agent_id for agent_id, ok in zip(agents, allowed, strict=True) if ok}
    return {key: memory for key, memory in found.items() if memory.agent_id in readable}


def _bad(field: str, message: str) -> ClientError:
    return ClientError(ErrorCode.BAD_USER_INPUT, f"{field}: {message}", field=field)
