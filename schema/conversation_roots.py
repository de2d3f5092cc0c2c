"""Root fields of conversations: queries, mutations and subscriptions."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from functools import partial
from typing import Any
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers import conversations as resolve
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.live import live_events
from resolvers.writes import await_projection
from schema.conversations import (
    Conversation,
    ConversationConnection,
    ConversationKind,
    ConversationOrder,
    Message,
    NegotiationMove,
    NegotiationState,
    ParticipantRole,
)
from schema.idempotency import idempotency_key
from schema.memories import SearchMode, pick_mode
from schema.relay import decode_id, page_request, require_ids, wants_total
from schema.scalars import JSON
from schema.search import decode_cursor, encode_cursor
from schema.user_errors import UserError, attempt
from stores.postgres import conversation_records as records
from stores.search import SearchHit, SearchPage

Info = strawberry.Info[RequestContext, None]


@strawberry.input(description="Give exactly one of `agentId` and `userId`.")
class ParticipantInput:
    agent_id: relay.GlobalID | None = None
    user_id: relay.GlobalID | None = None
    role: ParticipantRole = ParticipantRole.MEMBER

    def to_store(self) -> records.Member:
        return records.Member(
            agent_id=decode_id(self.agent_id, "Agent", field="participants")
            if self.agent_id
            else None,
            user_id=decode_id(self.user_id, "User", field="participants") if self.user_id else None,
            role=self.role.value,
        )


@strawberry.input
class CreateConversationInput:
    title: str = strawberry.field(description="1 to 200 characters.")
    kind: ConversationKind = ConversationKind.CHAT
    participants: list[ParticipantInput] = strawberry.field(
        description="1 to 50. Below operator, include yourself. A negotiation needs a "
        "PROPOSER, an OPPONENT and a MEDIATOR."
    )
    task_ids: list[relay.GlobalID] = strawberry.field(
        default_factory=list, description="What a negotiation is about: at most 20 tasks."
    )
    idempotency_key: str | None = idempotency_key()

    def to_store(self) -> records.ConversationInput:
        # Refused before decoding ids, so an oversized list costs nothing more.
        for name, given, most in (
            ("participants", self.participants, records.MAX_PARTICIPANTS),
            ("taskIds", self.task_ids, records.MAX_TASKS),
        ):
            if len(given) > most:
                raise ClientError(
                    ErrorCode.BAD_USER_INPUT,
                    f"{name}: at most {most}, got {len(given)}",
                    field=name,
                )
        return records.ConversationInput(
            title=self.title,
            kind=self.kind.value,
            participants=tuple(p.to_store() for p in self.participants),
            task_ids=tuple(require_ids(self.task_ids, "Task", field="taskIds")),
        )


@strawberry.input
class PostMessageInput:
    conversation_id: relay.GlobalID
    content: str = strawberry.field(description="1 to 20,000 characters.")
    reply_to_id: relay.GlobalID | None = strawberry.field(
        default=None, description="A message of the same conversation."
    )
    metadata: JSON = strawberry.field(default_factory=dict, description="At most 16 KiB.")
    idempotency_key: str | None = idempotency_key()

    def to_store(self) -> records.MessageInput:
        return _message_input(self.content, self.reply_to_id, self.metadata)


@strawberry.input
class MoveNegotiationInput:
    conversation_id: relay.GlobalID
    move: NegotiationMove
    content: str = strawberry.field(
        description="The thesis, antithesis, synthesis, resolution or reason for abandoning."
    )
    expected_version: int | None = strawberry.field(
        default=None, description="The version you read; a different one answers CONFLICT."
    )
    reply_to_id: relay.GlobalID | None = None
    metadata: JSON = strawberry.field(default_factory=dict)
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(
        default=True, description="Wait, bounded, until Neo4j shows a resolution."
    )


def _message_input(
    content: str, reply_to_id: relay.GlobalID | None, metadata: JSON
) -> records.MessageInput:
    return records.MessageInput(
        content=content,
        reply_to_id=decode_id(reply_to_id, "Message", field="replyToId") if reply_to_id else None,
        metadata=metadata,
    )


@strawberry.type
class ConversationPayload:
    conversation: Conversation | None
    user_errors: list[UserError]


@strawberry.type
class MessagePayload:
    message: Message | None
    user_errors: list[UserError]


@strawberry.type
class NegotiationPayload:
    conversation: Conversation | None
    message: Message | None
    user_errors: list[UserError]
    projected: bool = strawberry.field(
        description="True when Neo4j already shows a resolution; false for other moves."
    )


@strawberry.type(description="One search result: the message and its score.")
class MessageSearchEdge:
    cursor: str
    node: Message
    score: float
    semantic_rank: int | None
    keyword_rank: int | None


@strawberry.type(description="A page of message search results, best first.")
class MessageSearchConnection:
    edges: list[MessageSearchEdge]
    page_info: relay.PageInfo

    @classmethod
    def from_page(cls, page: SearchPage[records.Message]) -> MessageSearchConnection:
        edges = [_edge(hit, page.offset + index) for index, hit in enumerate(page.hits)]
        return cls(
            edges=edges,
            page_info=relay.PageInfo(
                has_next_page=page.has_next_page,
                has_previous_page=page.offset > 0,
                start_cursor=edges[0].cursor if edges else None,
                end_cursor=edges[-1].cursor if edges else None,
            ),
        )


def _edge(hit: SearchHit[records.Message], position: int) -> MessageSearchEdge:
    return MessageSearchEdge(
        cursor=encode_cursor(position),
        node=Message.from_record(hit.item),
        score=hit.score,
        semantic_rank=hit.semantic_rank,
        keyword_rank=hit.keyword_rank,
    )


@strawberry.type(
    description="A negotiation moved: the move, the state and version it reached, and the "
    "conversation as it is now."
)
class NegotiationChange:
    conversation: Conversation
    message: Message
    move: NegotiationMove
    state: NegotiationState
    version: int


def _conversation_id(value: relay.GlobalID, field: str = "conversationId") -> UUID:
    return decode_id(value, "Conversation", field=field)


@strawberry.type
class ConversationQueries:
    @strawberry.field(description="A conversation you take part in (admins: any).")
    async def conversation(self, info: Info, id: relay.GlobalID) -> Conversation:
        found = await resolve.readable(info.context, _conversation_id(id, "id"))
        return Conversation.from_record(found)

    @strawberry.field(description="The conversations you take part in (admins: all).")
    async def conversations(
        self,
        info: Info,
        kind: ConversationKind | None = None,
        order: ConversationOrder = ConversationOrder.NEWEST_FIRST,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> ConversationConnection:
        page = await resolve.list_conversations(
            info.context,
            page_request(first, after, last, before),
            newest_first=order is ConversationOrder.NEWEST_FIRST,
            kind=kind.value if kind else None,
            with_total=wants_total(info),
        )
        return ConversationConnection.from_page(page, Conversation.from_record)

    @strawberry.field(
        description="Messages of the conversations you may read, by meaning, by words or "
        "both (HYBRID, the default); `conversationId` narrows to one. Messages are embedded "
        "in the background: until then only KEYWORD finds them."
    )
    async def search_messages(
        self,
        info: Info,
        query: str,
        mode: SearchMode | None = None,
        conversation_id: relay.GlobalID | None = None,
        first: int = 10,
        after: str | None = None,
    ) -> MessageSearchConnection:
        page = await resolve.search_messages(
            info.context,
            mode=pick_mode(mode, query),
            text=query,
            conversation_id=_conversation_id(conversation_id) if conversation_id else None,
            first=first,
            offset=decode_cursor(after),
        )
        return MessageSearchConnection.from_page(page)


@strawberry.type
class ConversationMutations:
    @strawberry.mutation(description="Start a conversation or a negotiation. Agents and up.")
    async def create_conversation(
        self, info: Info, input: CreateConversationInput
    ) -> ConversationPayload:
        async def run() -> Conversation:
            created = await resolve.create_conversation(
                info.context, input.to_store(), idempotency_key=input.idempotency_key
            )
            return Conversation.from_record(created)

        conversation, errors = await attempt(run())
        return ConversationPayload(conversation=conversation, user_errors=errors)

    @strawberry.mutation(description="Post a message. Participants (role agent and up).")
    async def post_message(self, info: Info, input: PostMessageInput) -> MessagePayload:
        async def run() -> Message:
            posted = await resolve.post_message(
                info.context,
                _conversation_id(input.conversation_id),
                input.to_store(),
                idempotency_key=input.idempotency_key,
            )
            return Message.from_record(posted)

        message, errors = await attempt(run())
        return MessagePayload(message=message, user_errors=errors)

    @strawberry.mutation(
        description="Move a negotiation on, as a participant whose role allows the move "
        "(see ParticipantRole); CONFLICT when `expectedVersion` is stale or the state does "
        "not allow the move."
    )
    async def move_negotiation(self, info: Info, input: MoveNegotiationInput) -> NegotiationPayload:
        async def run() -> tuple[Conversation, Message]:
            conversation, message = await resolve.move_negotiation(
                info.context,
                _conversation_id(input.conversation_id),
                input.move.value,
                _message_input(input.content, input.reply_to_id, input.metadata),
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
            )
            return Conversation.from_record(conversation), Message.from_record(message)

        moved, errors = await attempt(run())
        resolved = moved is not None and moved[0].state is NegotiationState.RESOLVED
        projected = await await_projection(info.context, input.wait_for_projection and resolved)
        return NegotiationPayload(
            conversation=moved[0] if moved else None,
            message=moved[1] if moved else None,
            user_errors=errors,
            projected=projected,
        )


def _message(record: records.Message) -> Message:
    return Message.from_record(record)


def _change(
    event: dict[str, Any], conversation: records.Conversation, message: records.Message
) -> NegotiationChange:
    return NegotiationChange(
        conversation=Conversation.from_record(conversation),
        message=Message.from_record(message),
        move=NegotiationMove(event["move"]),
        state=NegotiationState(event["state"]),
        version=int(event["version"]),
    )


@strawberry.type
class ConversationSubscriptions:
    @strawberry.subscription(
        description="Messages as they are posted to one conversation, from any gateway "
        "replica. Participants and admins; checked when you subscribe."
    )
    async def message_added(
        self, info: Info, conversation_id: relay.GlobalID
    ) -> AsyncGenerator[Message, None]:
        ctx = info.context
        wanted = _conversation_id(conversation_id)
        await resolve.readable(ctx, wanted)
        async for event in live_events(ctx, resolve.MESSAGE_ADDED_CHANNEL, shareable=True):
            if UUID(event["conversation_id"]) != wanted:
                continue
            found = await ctx.loaders.conversations.message_by_id.load(UUID(event["message_id"]))
            if found is not None:
                yield event.memo("message_added", partial(_message, found))

    @strawberry.subscription(
        description="Negotiation moves, from any gateway replica: of one negotiation (checked "
        "when you subscribe), or of every negotiation you may read."
    )
    async def negotiation_changed(
        self, info: Info, conversation_id: relay.GlobalID | None = None
    ) -> AsyncGenerator[NegotiationChange, None]:
        ctx = info.context
        wanted = _conversation_id(conversation_id) if conversation_id else None
        if wanted is not None:
            await resolve.readable(ctx, wanted)
        else:
            resolve.require_reader(ctx)
        async for event in live_events(ctx, resolve.NEGOTIATION_CHANGED_CHANNEL, shareable=True):
            changed = UUID(event["conversation_id"])
            if wanted is not None and changed != wanted:
                continue
            # Without a conversation named, each event is checked for this subscriber.
            if wanted is None and not await resolve.may_read(ctx, changed):
                continue
            loaders = ctx.loaders.conversations
            conversation = await loaders.conversation_by_id.load(changed)
            message = await loaders.message_by_id.load(UUID(event["message_id"]))
            if conversation is not None and message is not None:
                yield event.memo(
                    "negotiation_changed", partial(_change, dict(event), conversation, message)
                )
