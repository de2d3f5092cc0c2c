"""Conversations between agents and users, their messages, and negotiations."""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers import conversations as resolve
from resolvers.context import RequestContext
from schema.relay import CountedConnection, encode_id, node_id_field
from schema.scalars import JSON
from stores.postgres import conversation_records as records

if TYPE_CHECKING:
    from schema.agents import Agent
    from schema.tasks import Task
    from schema.users import User

Info = strawberry.Info[RequestContext, None]


@strawberry.enum(description="A plain conversation, or a negotiation with a state machine.")
class ConversationKind(enum.Enum):
    CHAT = "chat"
    NEGOTIATION = "negotiation"


@strawberry.enum(
    description="OPEN -> THESIS -> ANTITHESIS -> SYNTHESIS -> RESOLVED; any state before "
    "RESOLVED may go to ABANDONED."
)
class NegotiationState(enum.Enum):
    OPEN = "open"
    THESIS = "thesis"
    ANTITHESIS = "antithesis"
    SYNTHESIS = "synthesis"
    RESOLVED = "resolved"
    ABANDONED = "abandoned"


@strawberry.enum(
    description="What a participant may do in a negotiation. Every participant reads and "
    "posts messages; PROPOSER moves THESIS and ABANDON, OPPONENT moves ANTITHESIS, MEDIATOR "
    "moves SYNTHESIS, RESOLVE and ABANDON. Chat participants are all MEMBER."
)
class ParticipantRole(enum.Enum):
    MEMBER = "member"
    PROPOSER = "proposer"
    OPPONENT = "opponent"
    MEDIATOR = "mediator"


@strawberry.enum(description="A plain message, or the negotiation move it made.")
class MessageKind(enum.Enum):
    MESSAGE = "message"
    THESIS = "thesis"
    ANTITHESIS = "antithesis"
    SYNTHESIS = "synthesis"
    RESOLUTION = "resolution"
    ABANDONMENT = "abandonment"


@strawberry.enum(description="A negotiation move; see NegotiationState and ParticipantRole.")
class NegotiationMove(enum.Enum):
    THESIS = "thesis"
    ANTITHESIS = "antithesis"
    SYNTHESIS = "synthesis"
    RESOLVE = "resolve"
    ABANDON = "abandon"


@strawberry.enum
class MessageOrder(enum.Enum):
    NEWEST_FIRST = "newest_first"
    OLDEST_FIRST = "oldest_first"


@strawberry.enum
class ConversationOrder(enum.Enum):
    NEWEST_FIRST = "newest_first"
    OLDEST_FIRST = "oldest_first"


@strawberry.type(description="An agent or a user taking part in a conversation.")
class Participant:
    role: ParticipantRole
    joined_at: datetime
    agent_id: strawberry.Private[UUID | None]
    user_id: strawberry.Private[UUID | None]

    @classmethod
    def from_record(cls, participant: records.Participant) -> Participant:
        return cls(
            role=ParticipantRole(participant.role),
            joined_at=participant.joined_at,
            agent_id=participant.agent_id,
            user_id=participant.user_id,
        )

    @strawberry.field(description="The agent, when an agent takes part.")
    async def agent(self, info: Info) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.agent_id)

    @strawberry.field(description="The user, when a user takes part in its own name.")
    async def user(self, info: Info) -> Annotated[User, strawberry.lazy("schema.users")] | None:
        from schema.users import User

        return await User.load(info, self.user_id)


@strawberry.type(description="One message of a conversation.")
class Message(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    kind: MessageKind
    content: str
    metadata: JSON
    embedding_pending: bool = strawberry.field(
        description="True until its embedding is computed (in the background); meanwhile "
        "only KEYWORD search finds it."
    )
    created_at: datetime
    record: strawberry.Private[records.Message]

    @classmethod
    def from_record(cls, message: records.Message) -> Message:
        return cls(
            id=str(message.id),
            _id=encode_id("Message", message.id),
            kind=MessageKind(message.kind),
            content=message.content,
            metadata=message.metadata,
            embedding_pending=message.embedding_pending,
            created_at=message.created_at,
            record=message,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Message | None]:
        ids = [_uuid_or_none(node_id) for node_id in node_ids]
        loader = info.context.loaders.conversations.message_by_id
        found = await loader.load_many([i for i in ids if i is not None])
        messages = {m.id: m for m in found if m is not None}
        # A message of a conversation the caller may not read is null, as if missing.
        readable = await resolve.readable_conversations(
            info.context, list({m.conversation_id for m in messages.values()})
        )
        return [
            cls.from_record(m)
            if i is not None and (m := messages.get(i)) and m.conversation_id in readable
            else None
            for i in ids
        ]

    @strawberry.field(description="The agent that wrote it, when an agent did.")
    async def author_agent(
        self, info: Info
    ) -> Annotated[Agent, strawberry.lazy("schema.agents")] | None:
        from schema.agents import Agent

        return await Agent.load(info, self.record.author_agent_id)

    @strawberry.field(description="The user that wrote it in its own name, when one did.")
    async def author_user(
        self, info: Info
    ) -> Annotated[User, strawberry.lazy("schema.users")] | None:
        from schema.users import User

        return await User.load(info, self.record.author_user_id)

    @strawberry.field(description="The message this one answers.")
    async def reply_to(self, info: Info) -> Message | None:
        reply_to_id = self.record.reply_to_id
        if reply_to_id is None:
            return None
        found = await info.context.loaders.conversations.message_by_id.load(reply_to_id)
        return Message.from_record(found) if found else None

    @strawberry.field
    async def conversation(self, info: Info) -> Conversation | None:
        loader = info.context.loaders.conversations.conversation_by_id
        found = await loader.load(self.record.conversation_id)
        return Conversation.from_record(found) if found else None


@strawberry.type
class MessageConnection(CountedConnection[Message]):
    pass


@strawberry.type(description="Where a resolution sits in the knowledge graph (Neo4j).")
class ResolutionLinks:
    agent_ids: strawberry.Private[tuple[UUID, ...]]
    task_ids: strawberry.Private[tuple[UUID, ...]]

    @strawberry.field(description="The agents that took part (AGREED_TO).")
    async def agents(self, info: Info) -> list[Annotated[Agent, strawberry.lazy("schema.agents")]]:
        from schema.agents import Agent

        return await Agent.load_many(info, self.agent_ids)

    @strawberry.field(description="The tasks it concerns (CONCERNS).")
    async def tasks(self, info: Info) -> list[Annotated[Task, strawberry.lazy("schema.tasks")]]:
        from schema.tasks import Task

        return await Task.load_many(info, self.task_ids)


@strawberry.type(
    description="Agents and users talking; a NEGOTIATION also moves through its states. "
    "Participants read and write; admins read all."
)
class Conversation(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    title: str
    kind: ConversationKind
    state: NegotiationState | None = strawberry.field(description="Null for a CHAT.")
    resolution: str | None = strawberry.field(description="What a RESOLVED negotiation decided.")
    resolved_at: datetime | None
    created_at: datetime
    last_message_at: datetime | None
    version: int = strawberry.field(
        description="Send it back as `expectedVersion` with a negotiation move."
    )
    record: strawberry.Private[records.Conversation]

    @classmethod
    def from_record(cls, conversation: records.Conversation) -> Conversation:
        return cls(
            id=str(conversation.id),
            _id=encode_id("Conversation", conversation.id),
            title=conversation.title,
            kind=ConversationKind(conversation.kind),
            state=NegotiationState(conversation.state) if conversation.state else None,
            resolution=conversation.resolution,
            resolved_at=conversation.resolved_at,
            created_at=conversation.created_at,
            last_message_at=conversation.last_message_at,
            version=conversation.version,
            record=conversation,
        )

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Conversation | None]:
        ids = [_uuid_or_none(node_id) for node_id in node_ids]
        # Conversations the caller may not read are null, as if they did not exist.
        found = await resolve.readable_conversations(info.context, [i for i in ids if i])
        return [cls.from_record(found[i]) if i and i in found else None for i in ids]

    @strawberry.field(description="Everyone taking part, in the order they joined.")
    async def participants(self, info: Info) -> list[Participant]:
        loader = info.context.loaders.conversations.participants_by_conversation_id
        return [Participant.from_record(p) for p in await loader.load(self.record.id)]

    @strawberry.field(description="The newest message (one query for a whole page).")
    async def last_message(self, info: Info) -> Message | None:
        loader = info.context.loaders.conversations.last_message_by_conversation_id
        found = await loader.load(self.record.id)
        return Message.from_record(found) if found else None

    @strawberry.field(
        description="Messages, a page at a time, newest or oldest first. A first page "
        "without `totalCount` is read for a whole page of conversations in one query; later "
        "pages, and counts, take one query per conversation."
    )
    async def messages(
        self,
        info: Info,
        order: MessageOrder = MessageOrder.NEWEST_FIRST,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> MessageConnection:
        from schema.relay import page_request, wants_total

        page = await resolve.list_messages(
            info.context,
            self.record.id,
            page_request(first, after, last, before),
            newest_first=order is MessageOrder.NEWEST_FIRST,
            with_total=wants_total(info),
        )
        return MessageConnection.from_page(page, Message.from_record)

    @strawberry.field(description="The tasks a negotiation is about.")
    async def tasks(self, info: Info) -> list[Annotated[Task, strawberry.lazy("schema.tasks")]]:
        from schema.tasks import Task

        loader = info.context.loaders.conversations.task_ids_by_conversation_id
        return await Task.load_many(info, await loader.load(self.record.id))

    @strawberry.field(
        description="A RESOLVED negotiation's links in the knowledge graph; null until "
        "projected (or when the graph is unavailable)."
    )
    async def resolution_links(self, info: Info) -> ResolutionLinks | None:
        if self.record.state != "resolved":
            return None
        loader = info.context.loaders.conversations.resolution_links_by_conversation_id
        links = await loader.load(self.record.id)
        if links is None:
            return None
        return ResolutionLinks(agent_ids=links.agent_ids, task_ids=links.task_ids)


@strawberry.type
class ConversationConnection(CountedConnection[Conversation]):
    pass


def _uuid_or_none(value: str) -> UUID | None:
    try:
        return UUID(value)
    except ValueError:
        return None
