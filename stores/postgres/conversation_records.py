"""Plain records and inputs of conversations, messages and negotiations, with the
limits on what a client may send and the negotiation's moves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from stores.postgres.records import JSON

MAX_TITLE_LENGTH = 200
MAX_CONTENT_LENGTH = 20_000
MAX_METADATA_BYTES = 16 * 1024
MAX_PARTICIPANTS = 50
MAX_TASKS = 20

KINDS = ("chat", "negotiation")
ROLES = ("member", "proposer", "opponent", "mediator")
TERMINAL_STATES = ("resolved", "abandoned")


@dataclass(frozen=True, slots=True)
class Move:
    """One negotiation move: the states it leaves, the one it reaches, the kind of
    message it writes and the participant roles allowed to make it."""

    from_states: tuple[str, ...]
    to_state: str
    message_kind: str
    roles: tuple[str, ...]


MOVES: dict[str, Move] = {
    "thesis": Move(("open",), "thesis", "thesis", ("proposer",)),
    "antithesis": Move(("thesis",), "antithesis", "antithesis", ("opponent",)),
    "synthesis": Move(("antithesis",), "synthesis", "synthesis", ("mediator",)),
    "resolve": Move(("synthesis",), "resolved", "resolution", ("mediator",)),
    "abandon": Move(
        ("open", "thesis", "antithesis", "synthesis"),
        "abandoned",
        "abandonment",
        ("proposer", "mediator"),
    ),
}


@dataclass(frozen=True, slots=True)
class Conversation:
    id: UUID
    title: str
    kind: str
    state: str | None
    resolution: str | None
    resolved_at: datetime | None
    created_by: UUID | None
    created_at: datetime
    last_message_at: datetime | None
    version: int


@dataclass(frozen=True, slots=True)
class Participant:
    """An agent or a user (exactly one of the two ids) taking part in a conversation."""

    conversation_id: UUID
    agent_id: UUID | None
    user_id: UUID | None
    role: str
    joined_at: datetime


@dataclass(frozen=True, slots=True)
class Message:
    id: UUID
    conversation_id: UUID
    author_agent_id: UUID | None
    author_user_id: UUID | None
    kind: str
    content: str
    reply_to_id: UUID | None
    metadata: JSON
    embedding_pending: bool
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Member:
    """Who is taking part: an agent or a user, with a role."""

    agent_id: UUID | None = None
    user_id: UUID | None = None
    role: str = "member"


@dataclass(frozen=True, slots=True)
class ConversationInput:
    title: str
    kind: str = "chat"
    participants: tuple[Member, ...] = ()
    task_ids: tuple[UUID, ...] = ()


@dataclass(frozen=True, slots=True)
class MessageInput:
    content: str
    reply_to_id: UUID | None = None
    metadata: JSON = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reader:
    """Whose conversations a list shows: those where this user, or this agent, takes part."""

    user_id: UUID | None
    agent_id: UUID | None
