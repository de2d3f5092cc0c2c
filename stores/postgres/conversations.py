"""Conversations, their messages, and negotiations: conversations whose moves follow
a state machine.

    OPEN -> THESIS -> ANTITHESIS -> SYNTHESIS -> RESOLVED
      \\________\\___________\\____________\\----> ABANDONED

Each move is a message of the move's kind, written with the conversation's new state,
its version (optimistic concurrency: `expected_version`), an audit row and, for a
resolution, an outbox row that links it in the graph to the agents taking part and
the tasks it concerns, all in one transaction. Who may make which move is the
participant's role (`MOVES`); the resolver checks it, this module the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING
from uuid import UUID, uuid4

from asyncpg import Record

from stores.errors import Conflict, InvalidInput, NotFound
from stores.postgres.conversation_records import (
    KINDS,
    MAX_CONTENT_LENGTH,
    MAX_METADATA_BYTES,
    MAX_PARTICIPANTS,
    MAX_TASKS,
    MAX_TITLE_LENGTH,
    MOVES,
    ROLES,
    Conversation,
    ConversationInput,
    Member,
    Message,
    MessageInput,
    Participant,
    Reader,
)
from stores.postgres.inputs import check_json_object, check_text
from stores.postgres.options import PgConnection
from stores.postgres.pagination import (
    Page,
    PageRequest,
    Params,
    check_page_size,
    cursor_for,
    fetch_page,
    ordering,
)
from stores.postgres.records import JSON, WriteContext
from stores.postgres.writes import (
    Refusals,
    check_version,
    claim_idempotency_key,
    write_audit,
    write_transaction,
)

if TYPE_CHECKING:
    from stores.postgres.store import PostgresStore

_CONVERSATION = (
    "id, title, kind, state, resolution, resolved_at, created_by, created_at,"
    " last_message_at, version"
)
_PARTICIPANT = "conversation_id, agent_id, user_id, role, joined_at"
MESSAGE_COLUMNS = (
    "m.id, m.conversation_id, m.author_agent_id, m.author_user_id, m.kind, m.content,"
    " m.reply_to_id, m.metadata, m.embedding_pending, m.created_at"
)
_MESSAGE = MESSAGE_COLUMNS.replace("m.", "")

_CONVERSATIONS_NEWEST = ordering(
    "conversations.-created", ("created_at", "timestamp"), ("id", "uuid"), descending=True
)
_CONVERSATIONS_OLDEST = ordering(
    "conversations.created", ("created_at", "timestamp"), ("id", "uuid")
)
_MESSAGES_OLDEST = ordering("messages.created", ("created_at", "timestamp"), ("id", "uuid"))
_MESSAGES_NEWEST = ordering(
    "messages.-created", ("created_at", "timestamp"), ("id", "uuid"), descending=True
)


def reader_condition(reader: Reader, params: Params, conversation_id: str) -> str:
    """SQL: the conversation `conversation_id` (an SQL expression) has `reader` taking part."""
    return (
        "EXISTS (SELECT FROM conversation_participants AS p"
        f" WHERE p.conversation_id = {conversation_id}"
        f" AND (p.user_id = {params(reader.user_id)}::uuid"
        f" OR p.agent_id = {params(reader.agent_id)}::uuid))"
    )


class ConversationRepository:
    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def create(self, ctx: WriteContext, data: ConversationInput) -> Conversation:
        _check_conversation(data)
        conversation_id = uuid4()
        refusals: Refusals = {
            "conversation_participants_agent_id_fkey": lambda: NotFound(
                "agent", "given", field="participants"
            ),
            "conversation_participants_user_id_fkey": lambda: NotFound(
                "user", "given", field="participants"
            ),
            "conversation_tasks_task_id_fkey": lambda: NotFound("task", "given", field="taskIds"),
        }
        async with write_transaction(self._store, refusals) as conn:
            replay = await claim_idempotency_key(
                conn, ctx, "conversation.create", {"id": str(conversation_id)}
            )
            if replay is not None:
                return await _get(conn, UUID(replay["id"]))
            row = await conn.fetchrow(
                "INSERT INTO conversations (id, title, kind, state, created_by)"
                " VALUES ($1, $2, $3, $4, $5)"
                f" RETURNING {_CONVERSATION}",
                conversation_id,
                data.title,
                data.kind,
                "open" if data.kind == "negotiation" else None,
                ctx.actor_id,
            )
            assert row is not None
            await conn.execute(
                "INSERT INTO conversation_participants (conversation_id, agent_id, user_id, role)"
                " SELECT $1, u.agent_id, u.user_id, u.role"
                " FROM unnest($2::uuid[], $3::uuid[], $4::text[]) AS u(agent_id, user_id, role)",
                conversation_id,
                [m.agent_id for m in data.participants],
                [m.user_id for m in data.participants],
                [m.role for m in data.participants],
            )
            if data.task_ids:
                await conn.execute(
                    "INSERT INTO conversation_tasks (conversation_id, task_id)"
                    " SELECT $1, unnest($2::uuid[])",
                    conversation_id,
                    list(data.task_ids),
                )
            conversation = _conversation(row)
            await write_audit(
                conn,
                ctx,
                "create",
                "conversation",
                conversation_id,
                None,
                {
                    "conversation": conversation,
                    "participants": list(data.participants),
                    "task_ids": list(data.task_ids),
                },
            )
        return conversation

    async def by_ids(self, ids: Sequence[UUID]) -> dict[UUID, Conversation]:
        if not ids:
            return {}
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_CONVERSATION} FROM conversations WHERE id = ANY($1::uuid[])", list(ids)
            )
        return {row["id"]: _conversation(row) for row in rows}

    async def participants_of(self, ids: Sequence[UUID]) -> dict[UUID, list[Participant]]:
        """Each conversation's participants, in the order they joined."""
        found: dict[UUID, list[Participant]] = {i: [] for i in ids}
        if not found:
            return found
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_PARTICIPANT} FROM conversation_participants"
                " WHERE conversation_id = ANY($1::uuid[])"
                " ORDER BY conversation_id, joined_at, agent_id, user_id",
                list(found),
            )
        for row in rows:
            found[row["conversation_id"]].append(_participant(row))
        return found

    async def task_ids_of(self, ids: Sequence[UUID]) -> dict[UUID, list[UUID]]:
        found: dict[UUID, list[UUID]] = {i: [] for i in ids}
        if not found:
            return found
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                "SELECT conversation_id, task_id FROM conversation_tasks"
                " WHERE conversation_id = ANY($1::uuid[]) ORDER BY conversation_id, task_id",
                list(found),
            )
        for row in rows:
            found[row["conversation_id"]].append(row["task_id"])
        return found

    async def list(
        self,
        reader: Reader | None,
        page: PageRequest,
        *,
        newest_first: bool = True,
        kind: str | None = None,
        with_total: bool = False,
    ) -> Page[Conversation]:
        """Conversations `reader` takes part in (every one when `reader` is None)."""
        params = Params()
        where: list[str] = []
        if reader is not None:
            where.append(reader_condition(reader, params, "conversations.id"))
        if kind is not None:
            where.append(f"kind = {params(kind)}")
        async with self._store.connection() as conn:
            return await fetch_page(
                conn,
                select=_CONVERSATION,
                source="conversations",
                where=where,
                params=params,
                order=_CONVERSATIONS_NEWEST if newest_first else _CONVERSATIONS_OLDEST,
                page=page,
                with_total=with_total,
                decode=_conversation,
            )

    async def messages(
        self,
        conversation_id: UUID,
        page: PageRequest,
        *,
        newest_first: bool,
        with_total: bool = False,
    ) -> Page[Message]:
        params = Params([conversation_id])
        async with self._store.connection() as conn:
            return await fetch_page(
                conn,
                select=_MESSAGE,
                source="messages",
                where=["conversation_id = $1"],
                params=params,
                order=_MESSAGES_NEWEST if newest_first else _MESSAGES_OLDEST,
                page=page,
                with_total=with_total,
                decode=message_from_row,
            )

    async def first_messages_of(
        self, conversation_ids: Sequence[UUID], *, first: int, newest_first: bool
    ) -> dict[UUID, Page[Message]]:
        """The first page of messages of each conversation, for a page of conversations in
        one query (each conversation reads at most `first + 1` rows of its index)."""
        check_page_size(first)
        ids = list(dict.fromkeys(conversation_ids))
        found: dict[UUID, list[Message]] = {i: [] for i in ids}
        if ids:
            direction = "DESC" if newest_first else "ASC"
            async with self._store.connection() as conn:
                rows = await conn.fetch(
                    f"SELECT {MESSAGE_COLUMNS} FROM unnest($1::uuid[]) AS c(id)"
                    " CROSS JOIN LATERAL (SELECT * FROM messages AS page"
                    "   WHERE page.conversation_id = c.id"
                    f"   ORDER BY page.created_at {direction}, page.id {direction}"
                    "   LIMIT $2) AS m",
                    ids,
                    first + 1,
                )
            for row in rows:
                found[row["conversation_id"]].append(message_from_row(row))
        order = _MESSAGES_NEWEST if newest_first else _MESSAGES_OLDEST
        return {
            conversation_id: Page(
                items=messages[:first],
                cursors=[cursor_for(order, [m.created_at, m.id]) for m in messages[:first]],
                has_next_page=len(messages) > first,
                has_previous_page=False,
            )
            for conversation_id, messages in found.items()
        }

    async def messages_by_ids(self, ids: Sequence[UUID]) -> dict[UUID, Message]:
        if not ids:
            return {}
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = ANY($1::uuid[])",
                list(ids),
            )
        return {row["id"]: message_from_row(row) for row in rows}

    async def last_messages_of(self, ids: Sequence[UUID]) -> dict[UUID, Message]:
        """Each conversation's newest message, for a page of conversations in one query."""
        if not ids:
            return {}
        async with self._store.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {MESSAGE_COLUMNS} FROM unnest($1::uuid[]) AS c(id)"
                " CROSS JOIN LATERAL (SELECT * FROM messages AS last"
                "   WHERE last.conversation_id = c.id"
                "   ORDER BY last.created_at DESC, last.id DESC LIMIT 1) AS m",
                list(dict.fromkeys(ids)),
            )
        return {row["conversation_id"]: message_from_row(row) for row in rows}

    async def post(
        self, ctx: WriteContext, conversation_id: UUID, author: Member, data: MessageInput
    ) -> Message:
        """A plain message; its embedding is left pending for the background filler."""
        _check_message(data)
        message_id = uuid4()
        async with write_transaction(self._store, _MESSAGE_REFUSALS) as conn:
            operation = f"conversation.post {conversation_id}"
            replay = await claim_idempotency_key(conn, ctx, operation, {"id": str(message_id)})
            if replay is not None:
                return await _message(conn, UUID(replay["id"]))
            # The post stamps `last_message_at`; a move waits for it, and it for a move.
            found = await conn.fetchval(
                "SELECT true FROM conversations WHERE id = $1 FOR NO KEY UPDATE", conversation_id
            )
            if not found:
                raise NotFound("conversation", conversation_id, field="conversationId")
            message = await _insert_message(
                conn, message_id, conversation_id, author, "message", data
            )
            await write_audit(conn, ctx, "post", "message", message.id, None, message)
        return message

    async def move(
        self,
        ctx: WriteContext,
        conversation_id: UUID,
        author: Member,
        move: str,
        data: MessageInput,
        *,
        expected_version: int | None,
    ) -> tuple[Conversation, Message]:
        """Make a negotiation move: its message, the new state and version, an audit row,
        and for a resolution the outbox row that puts it in the graph."""
        step = MOVES.get(move)
        if step is None:
            raise InvalidInput("move", f"unknown move {move!r}; use one of {', '.join(MOVES)}")
        _check_message(data)
        message_id = uuid4()
        async with write_transaction(self._store, _MESSAGE_REFUSALS) as conn:
            operation = f"conversation.move {conversation_id} {move}"
            replay = await claim_idempotency_key(
                conn, ctx, operation, {"id": str(conversation_id), "message_id": str(message_id)}
            )
            if replay is not None:
                replayed = await _message(conn, UUID(replay["message_id"]))
                return await _get(conn, conversation_id), replayed
            row = await conn.fetchrow(
                f"SELECT {_CONVERSATION} FROM conversations WHERE id = $1 FOR UPDATE",
                conversation_id,
            )
            if row is None:
                raise NotFound("conversation", conversation_id, field="conversationId")
            current = _conversation(row)
            if current.kind != "negotiation":
                raise InvalidInput("conversationId", "is a chat; only negotiations take moves")
            check_version("negotiation", conversation_id, current.version, expected_version)
            assert current.state is not None
            if current.state not in step.from_states:
                raise Conflict(
                    f"negotiation {conversation_id} is {current.state.upper()}; "
                    f"{move.upper()} is only allowed from "
                    f"{' or '.join(s.upper() for s in step.from_states)}",
                    field="move",
                )
            message = await _insert_message(
                conn, message_id, conversation_id, author, step.message_kind, data
            )
            resolved = step.to_state == "resolved"
            updated = await conn.fetchrow(
                "UPDATE conversations SET state = $2, version = version + 1,"
                " resolution = CASE WHEN $3 THEN $4 ELSE resolution END,"
                " resolved_at = CASE WHEN $3 THEN now() ELSE resolved_at END"
                f" WHERE id = $1 RETURNING {_CONVERSATION}",
                conversation_id,
                step.to_state,
                resolved,
                data.content,
            )
            assert updated is not None
            conversation = _conversation(updated)
            outbox = None
            if resolved:
                outbox = ("negotiation.resolved", await _resolved(conn, conversation, message))
            await write_audit(
                conn,
                ctx,
                move,
                "negotiation",
                conversation_id,
                {"state": current.state, "version": current.version},
                {
                    "state": conversation.state,
                    "version": conversation.version,
                    "message_id": str(message.id),
                },
                outbox=outbox,
            )
        return conversation, message


_MESSAGE_REFUSALS: Refusals = {
    "messages_reply_to_id_fkey": lambda: NotFound("message", "given", field="replyToId"),
}


async def _insert_message(
    conn: PgConnection,
    message_id: UUID,
    conversation_id: UUID,
    author: Member,
    kind: str,
    data: MessageInput,
) -> Message:
    if data.reply_to_id is not None:
        # A reply stays in its conversation; one elsewhere reads as missing.
        same = await conn.fetchval(
            "SELECT true FROM messages WHERE id = $1 AND conversation_id = $2",
            data.reply_to_id,
            conversation_id,
        )
        if not same:
            raise NotFound("message", data.reply_to_id, field="replyToId")
    row = await conn.fetchrow(
        "WITH m AS (INSERT INTO messages (id, conversation_id, author_agent_id, author_user_id,"
        " kind, content, reply_to_id, metadata) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        " RETURNING *),"
        " touched AS (UPDATE conversations SET last_message_at = (SELECT created_at FROM m)"
        "   WHERE id = $2)"
        f" SELECT {MESSAGE_COLUMNS} FROM m",
        message_id,
        conversation_id,
        author.agent_id,
        author.user_id,
        kind,
        data.content,
        data.reply_to_id,
        data.metadata,
    )
    assert row is not None
    return message_from_row(row)


async def _resolved(conn: PgConnection, conversation: Conversation, message: Message) -> JSON:
    """The outbox payload of a resolution: what the graph links it to."""
    row = await conn.fetchrow(
        "SELECT"
        " ARRAY(SELECT agent_id FROM conversation_participants"
        "   WHERE conversation_id = $1 AND agent_id IS NOT NULL ORDER BY agent_id) AS agents,"
        " ARRAY(SELECT task_id FROM conversation_tasks"
        "   WHERE conversation_id = $1 ORDER BY task_id) AS tasks",
        conversation.id,
    )
    assert row is not None
    return {
        "id": str(conversation.id),
        "title": conversation.title,
        "resolution": conversation.resolution,
        "message_id": str(message.id),
        "agent_ids": [str(a) for a in row["agents"]],
        "task_ids": [str(t) for t in row["tasks"]],
    }


def _check_conversation(data: ConversationInput) -> None:
    check_text("title", data.title, MAX_TITLE_LENGTH)
    if data.kind not in KINDS:
        raise InvalidInput("kind", f"must be one of {', '.join(KINDS)}")
    if not 1 <= len(data.participants) <= MAX_PARTICIPANTS:
        raise InvalidInput("participants", f"must hold 1 to {MAX_PARTICIPANTS} participants")
    seen: set[tuple[UUID | None, UUID | None]] = set()
    for member in data.participants:
        if (member.agent_id is None) == (member.user_id is None):
            raise InvalidInput("participants", "each participant is an agentId or a userId")
        if member.role not in ROLES:
            raise InvalidInput("participants", f"role must be one of {', '.join(ROLES)}")
        if data.kind == "chat" and member.role != "member":
            raise InvalidInput("participants", "chat participants are all MEMBER")
        key = (member.agent_id, member.user_id)
        if key in seen:
            raise InvalidInput("participants", "each participant may appear only once")
        seen.add(key)
    if data.kind == "negotiation":
        roles = {member.role for member in data.participants}
        missing = [role for role in ("proposer", "opponent", "mediator") if role not in roles]
        if missing:
            raise InvalidInput(
                "participants",
                f"a negotiation needs a {', a '.join(r.upper() for r in missing)}"
                " to be able to reach a resolution",
            )
    if len(data.task_ids) > MAX_TASKS or len(set(data.task_ids)) != len(data.task_ids):
        raise InvalidInput("taskIds", f"at most {MAX_TASKS} distinct tasks")
    if data.task_ids and data.kind != "negotiation":
        raise InvalidInput("taskIds", "only a negotiation concerns tasks")


def _check_message(data: MessageInput) -> None:
    if not isinstance(data.content, str) or not data.content.strip():
        raise InvalidInput("content", "must not be empty")
    if len(data.content) > MAX_CONTENT_LENGTH:
        raise InvalidInput("content", f"must be at most {MAX_CONTENT_LENGTH:,} characters")
    check_json_object("metadata", data.metadata, MAX_METADATA_BYTES)


async def _get(conn: PgConnection, conversation_id: UUID) -> Conversation:
    row = await conn.fetchrow(
        f"SELECT {_CONVERSATION} FROM conversations WHERE id = $1", conversation_id
    )
    if row is None:
        raise NotFound("conversation", conversation_id, field="conversationId")
    return _conversation(row)


async def _message(conn: PgConnection, message_id: UUID) -> Message:
    row = await conn.fetchrow(
        f"SELECT {MESSAGE_COLUMNS} FROM messages m WHERE m.id = $1", message_id
    )
    if row is None:
        raise NotFound("message", message_id, field="idempotencyKey")
    return message_from_row(row)


def _conversation(row: Record) -> Conversation:
    return Conversation(
        id=row["id"],
        title=row["title"],
        kind=row["kind"],
        state=row["state"],
        resolution=row["resolution"],
        resolved_at=row["resolved_at"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        last_message_at=row["last_message_at"],
        version=row["version"],
    )


def _participant(row: Record) -> Participant:
    return Participant(
        conversation_id=row["conversation_id"],
        agent_id=row["agent_id"],
        user_id=row["user_id"],
        role=row["role"],
        joined_at=row["joined_at"],
    )


def message_from_row(row: Record) -> Message:
    return Message(
        id=row["id"],
        conversation_id=row["conversation_id"],
        author_agent_id=row["author_agent_id"],
        author_user_id=row["author_user_id"],
        kind=row["kind"],
        content=row["content"],
        reply_to_id=row["reply_to_id"],
        metadata=row["metadata"],
        embedding_pending=row["embedding_pending"],
        created_at=row["created_at"],
    )
