"""Conversations and negotiations: who may read and write them, and the events they raise.

Participants are agents and users. A caller takes part as an agent through a session
bound to it (`login` with `agentId`, the grant checked again on every write), or as a
user in its own name. Participants read and write; admins read every conversation and
write none they are not in; everyone else is refused. Writing needs role agent or above,
so a `read`-scoped key reads only. A negotiation move needs a participant whose role
allows it (`stores.postgres.conversations.MOVES`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from uuid import UUID

from resolvers.auth import Principal, Role, require
from resolvers.context import RequestContext
from resolvers.conversation_loaders import FirstMessagesKey
from resolvers.errors import ClientError, ErrorCode
from resolvers.search import query_vector, search_store
from resolvers.writes import publish
from stores.postgres.conversation_records import (
    MOVES,
    Conversation,
    ConversationInput,
    Member,
    Message,
    MessageInput,
    Participant,
    Reader,
)
from stores.postgres.pagination import Page, PageRequest
from stores.search import SearchMode, SearchPage
from stores.search.messages import MessageSearch

MESSAGE_ADDED_CHANNEL = "conversation.message"
NEGOTIATION_CHANGED_CHANNEL = "negotiation.changed"


def is_admin(principal: Principal) -> bool:
    return principal.role is not None and principal.role >= Role.ADMIN


def reader_of(principal: Principal) -> Reader | None:
    """The SQL scope of what `principal` may read; None for an admin (everything)."""
    if is_admin(principal):
        return None
    return Reader(user_id=principal.user_id, agent_id=principal.agent_id)


def participant_of(principal: Principal, participants: Sequence[Participant]) -> Participant | None:
    """The participant the caller speaks as: its bound agent first, then itself."""
    if principal.agent_id is not None:
        for participant in participants:
            if participant.agent_id == principal.agent_id:
                return participant
    if principal.user_id is not None:
        for participant in participants:
            if participant.user_id == principal.user_id:
                return participant
    return None


def require_reader(ctx: RequestContext) -> None:
    require(ctx.principal, at_least=Role.VIEWER)


async def may_read(ctx: RequestContext, conversation_id: UUID) -> bool:
    principal = ctx.principal
    if principal.role is None:
        return False
    if is_admin(principal):
        return True
    loaders = ctx.loaders.conversations
    participants = await loaders.participants_by_conversation_id.load(conversation_id)
    return participant_of(principal, participants) is not None


async def readable(ctx: RequestContext, conversation_id: UUID) -> Conversation:
    """The conversation, for a caller who may read it; NOT_FOUND or FORBIDDEN otherwise."""
    require(ctx.principal, at_least=Role.VIEWER)
    conversation = await ctx.loaders.conversations.conversation_by_id.load(conversation_id)
    if conversation is None:
        raise ClientError(
            ErrorCode.NOT_FOUND, f"conversation {conversation_id} not found", field="id"
        )
    if not await may_read(ctx, conversation_id):
        raise _not_a_participant()
    return conversation


async def readable_conversations(
    ctx: RequestContext, ids: Sequence[UUID]
) -> dict[UUID, Conversation]:
    """Those of `ids` the caller may read; the others read as missing (`node`)."""
    loaders = ctx.loaders.conversations
    found = [c for c in await loaders.conversation_by_id.load_many(list(ids)) if c is not None]
    # Together, so one participants query serves them all.
    allowed = await asyncio.gather(*(may_read(ctx, c.id) for c in found))
    return {c.id: c for c, ok in zip(found, allowed, strict=True) if ok}


async def list_conversations(
    ctx: RequestContext,
    page: PageRequest,
    *,
    newest_first: bool,
    kind: str | None,
    with_total: bool,
) -> Page[Conversation]:
    require(ctx.principal, at_least=Role.VIEWER)
    found = await ctx.stores.postgres.conversations.list(
        reader_of(ctx.principal),
        page,
        newest_first=newest_first,
        kind=kind,
        with_total=with_total,
    )
    for conversation in found.items:
        ctx.loaders.conversations.conversation_by_id.prime(conversation.id, conversation)
    return found


async def list_messages(
    ctx: RequestContext,
    conversation_id: UUID,
    page: PageRequest,
    *,
    newest_first: bool,
    with_total: bool,
) -> Page[Message]:
    await readable(ctx, conversation_id)
    if page.after is None and page.before is None and not page.backward and not with_total:
        # A first page: batched with the other conversations of the response.
        return await ctx.loaders.conversations.first_messages.load(
            FirstMessagesKey(conversation_id, page.size, newest_first)
        )
    return await ctx.stores.postgres.conversations.messages(
        conversation_id, page, newest_first=newest_first, with_total=with_total
    )


async def create_conversation(
    ctx: RequestContext, data: ConversationInput, *, idempotency_key: str | None
) -> Conversation:
    """Agents and up. Below operator, the caller must be among the participants (as its
    bound agent, or as itself when its session is bound to none)."""
    principal = ctx.principal
    require(principal, at_least=Role.AGENT)
    if principal.role is not None and principal.role < Role.OPERATOR:
        me = (
            Member(agent_id=principal.agent_id)
            if principal.agent_id is not None
            else Member(user_id=principal.user_id)
        )
        if not any((m.agent_id, m.user_id) == (me.agent_id, me.user_id) for m in data.participants):
            who = f"agent {me.agent_id}" if me.agent_id else f"user {me.user_id}"
            raise ClientError(
                ErrorCode.FORBIDDEN,
                f"include yourself ({who}) among the participants; only operators set up"
                " conversations they do not take part in",
                field="participants",
            )
        if me.agent_id is not None:
            await _require_grant(ctx, me.agent_id)
    conversation = await ctx.stores.postgres.conversations.create(
        ctx.write_context(idempotency_key), data
    )
    ctx.loaders.conversations.conversation_by_id.prime(conversation.id, conversation)
    return conversation


async def post_message(
    ctx: RequestContext,
    conversation_id: UUID,
    data: MessageInput,
    *,
    idempotency_key: str | None,
) -> Message:
    author = await _writer(ctx, conversation_id, move=None)
    message = await ctx.stores.postgres.conversations.post(
        ctx.write_context(idempotency_key), conversation_id, author, data
    )
    _embedding_pending(ctx)
    await publish(
        ctx,
        MESSAGE_ADDED_CHANNEL,
        {"conversation_id": str(conversation_id), "message_id": str(message.id)},
    )
    return message


async def move_negotiation(
    ctx: RequestContext,
    conversation_id: UUID,
    move: str,
    data: MessageInput,
    *,
    expected_version: int | None,
    idempotency_key: str | None,
) -> tuple[Conversation, Message]:
    author = await _writer(ctx, conversation_id, move=move)
    conversation, message = await ctx.stores.postgres.conversations.move(
        ctx.write_context(idempotency_key),
        conversation_id,
        author,
        move,
        data,
        expected_version=expected_version,
    )
    _embedding_pending(ctx)
    ctx.loaders.conversations.conversation_by_id.clear(conversation_id).prime(
        conversation_id, conversation
    )
    ids: dict[str, object] = {
        "conversation_id": str(conversation_id),
        "message_id": str(message.id),
    }
    await publish(ctx, MESSAGE_ADDED_CHANNEL, ids)
    await publish(
        ctx,
        NEGOTIATION_CHANGED_CHANNEL,
        {**ids, "move": move, "state": conversation.state, "version": conversation.version},
    )
    return conversation, message


async def search_messages(
    ctx: RequestContext,
    *,
    mode: SearchMode,
    text: str | None,
    conversation_id: UUID | None,
    first: int,
    offset: int,
) -> SearchPage[Message]:
    """Only messages of conversations the caller may read: one named must be readable,
    and without one the search is scoped to the caller's conversations in SQL."""
    require(ctx.principal, at_least=Role.VIEWER)
    if conversation_id is not None:
        await readable(ctx, conversation_id)
    text, vector = await query_vector(ctx, mode, text, None)
    page = await search_store(ctx).messages.search(
        MessageSearch(
            mode=mode,
            reader=reader_of(ctx.principal),
            text=text,
            vector=vector,
            conversation_id=conversation_id,
            first=first,
            offset=offset,
        )
    )
    for hit in page.hits:
        ctx.loaders.conversations.message_by_id.prime(hit.item.id, hit.item)
    return page


async def _writer(ctx: RequestContext, conversation_id: UUID, *, move: str | None) -> Member:
    """Who a write speaks as: the caller's participant, allowed to make `move`."""
    principal = ctx.principal
    require(principal, at_least=Role.AGENT)
    loaders = ctx.loaders.conversations
    conversation = await loaders.conversation_by_id.load(conversation_id)
    if conversation is None:
        raise ClientError(
            ErrorCode.NOT_FOUND,
            f"conversation {conversation_id} not found",
            field="conversationId",
        )
    participant = participant_of(
        principal, await loaders.participants_by_conversation_id.load(conversation_id)
    )
    if participant is None:
        raise _not_a_participant()
    if participant.agent_id is not None:
        await _require_grant(ctx, participant.agent_id)
    if move is not None:
        if conversation.kind != "negotiation":
            raise ClientError(
                ErrorCode.BAD_USER_INPUT,
                "conversationId: is a chat; only negotiations take moves",
                field="conversationId",
            )
        step = MOVES.get(move)
        if step is not None and participant.role not in step.roles:
            raise ClientError(
                ErrorCode.FORBIDDEN,
                f"{move.upper()} is for a {' or a '.join(r.upper() for r in step.roles)};"
                f" you take part as {participant.role.upper()}",
                field="move",
            )
    return Member(agent_id=participant.agent_id, user_id=participant.user_id, role=participant.role)


async def _require_grant(ctx: RequestContext, agent_id: UUID) -> None:
    # Revoking a grant stops writes as the agent at once, whatever sessions are open.
    user_id = ctx.principal.user_id
    if user_id is None or not await ctx.loaders.grant_by_user_and_agent.load((user_id, agent_id)):
        raise ClientError(
            ErrorCode.FORBIDDEN,
            f"you may no longer act as agent {agent_id}; its grant was revoked",
        )


def _embedding_pending(ctx: RequestContext) -> None:
    filler = ctx.stores.embedding_filler
    if filler is not None:
        filler.wake()


def _not_a_participant() -> ClientError:
    return ClientError(
        ErrorCode.FORBIDDEN,
        "Conversations are for their participants (and admins, who may read them);"
        " you do not take part in this one.",
    )
