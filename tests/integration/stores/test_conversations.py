"""Negotiations in PostgreSQL: concurrent moves, the outbox row of a resolution, and
writes that leave nothing behind when refused."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from uuid import UUID

from stores import PostgresStore
from stores.errors import Conflict, NotFound
from stores.postgres.conversation_records import (
    Conversation,
    ConversationInput,
    Member,
    MessageInput,
)
from stores.postgres.pagination import PageRequest
from tests.integration.stores import audit_rows, new_agent, new_ctx, new_task, outbox_rows


@dataclass(frozen=True)
class Negotiation:
    conversation: Conversation
    proposer: Member
    opponent: Member
    mediator: Member

    @property
    def id(self) -> UUID:
        return self.conversation.id

    @property
    def agent_ids(self) -> list[str]:
        return sorted(str(m.agent_id) for m in (self.proposer, self.opponent, self.mediator))


async def _negotiation(store: PostgresStore) -> Negotiation:
    agents = [await new_agent(store) for _ in range(3)]
    proposer, opponent, mediator = (
        Member(agent_id=agent.id, role=role)
        for agent, role in zip(agents, ("proposer", "opponent", "mediator"), strict=True)
    )
    task = await new_task(store)
    conversation = await store.conversations.create(
        new_ctx(),
        ConversationInput(
            title="which queue",
            kind="negotiation",
            participants=(proposer, opponent, mediator),
            task_ids=(task.id,),
        ),
    )
    return Negotiation(conversation, proposer, opponent, mediator)


async def test_of_two_moves_on_one_version_exactly_one_wins(store: PostgresStore) -> None:
    n = await _negotiation(store)
    cid, proposer, mediator = n.id, n.proposer, n.mediator
    outcomes = await asyncio.gather(
        store.conversations.move(
            new_ctx(), cid, proposer, "thesis", MessageInput("a"), expected_version=1
        ),
        store.conversations.move(
            new_ctx(), cid, mediator, "abandon", MessageInput("b"), expected_version=1
        ),
        return_exceptions=True,
    )
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    lost = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], Conflict), outcomes
    # The loser left no message behind.
    page = await store.conversations.messages(
        cid, PageRequest(), newest_first=True, with_total=True
    )
    assert page.total_count == 1


async def test_a_resolution_queues_its_graph_links_with_its_audit_row(
    store: PostgresStore,
) -> None:
    n = await _negotiation(store)
    cid, proposer, opponent, mediator = n.id, n.proposer, n.opponent, n.mediator
    for version, (who, move) in enumerate(
        [(proposer, "thesis"), (opponent, "antithesis"), (mediator, "synthesis")], start=1
    ):
        await store.conversations.move(
            new_ctx(), cid, who, move, MessageInput(move), expected_version=version
        )
    ctx = new_ctx()
    resolved, message = await store.conversations.move(
        ctx, cid, mediator, "resolve", MessageInput("use queue B"), expected_version=4
    )
    assert (resolved.state, resolved.version, resolved.resolution) == ("resolved", 5, "use queue B")
    [(kind, payload)] = await outbox_rows(store, id=str(cid))
    assert kind == "negotiation.resolved"
    assert sorted(payload["agent_ids"]) == n.agent_ids and payload["message_id"] == str(message.id)
    [task_ids] = (await store.conversations.task_ids_of([cid])).values()
    assert payload["task_ids"] == [str(t) for t in task_ids]
    [audit] = await audit_rows(store, ctx)
    assert (audit["action"], audit["old_value"]["state"], audit["new_value"]["state"]) == (
        "resolve",
        "synthesis",
        "resolved",
    )


async def test_a_refused_post_writes_nothing(store: PostgresStore) -> None:
    n = await _negotiation(store)
    cid, proposer = n.id, n.proposer
    other = (await _negotiation(store)).conversation
    posted = await store.conversations.post(new_ctx(), cid, proposer, MessageInput("first"))
    try:
        await store.conversations.post(
            new_ctx(),
            other.id,
            proposer,
            MessageInput("misplaced reply", reply_to_id=posted.id),
        )
    except NotFound as exc:
        assert exc.field == "replyToId"
    else:
        raise AssertionError("a reply to another conversation's message was accepted")
    page = await store.conversations.messages(
        other.id,
        PageRequest(),
        newest_first=True,
        with_total=True,
    )
    assert page.total_count == 0
    [stamped] = (await store.conversations.by_ids([cid])).values()
    assert stamped.last_message_at == posted.created_at
