"""Knowledge and memory mutations: rows, audit and outbox in one PostgreSQL transaction
each. A write whose embedding cannot be computed is kept, with `embeddingPending`."""

from __future__ import annotations

import strawberry
from strawberry import relay

from resolvers import search as resolve
from resolvers.context import RequestContext
from resolvers.writes import await_projection
from schema.idempotency import idempotency_key
from schema.memories import Memory, MemoryKind
from schema.patch import given, given_nullable
from schema.relay import decode_id
from schema.scalars import JSON
from schema.search import Knowledge, KnowledgeRelationType
from schema.user_errors import UserError, attempt
from stores.postgres.inputs import UNSET
from stores.search import KnowledgeInput, KnowledgePatch, MemoryInput

Info = strawberry.Info[RequestContext, None]

WAIT = "Wait, bounded, until the knowledge graph in Neo4j shows this change."
VECTOR = "Your own embedding instead of the gateway's; it must have the gateway's dimension."


@strawberry.input
class CreateKnowledgeInput:
    title: str
    content: str = ""
    source: str = ""
    tags: list[str] = strawberry.field(default_factory=list)
    agent_id: relay.GlobalID | None = strawberry.field(
        default=None, description="The agent that discovered it."
    )
    vector: list[float] | None = strawberry.field(default=None, description=VECTOR)
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.input(description="Only the fields given change; `agentId: null` detaches.")
class UpdateKnowledgeInput:
    id: relay.GlobalID
    expected_version: int | None = None
    title: str | None = strawberry.UNSET
    content: str | None = strawberry.UNSET
    source: str | None = strawberry.UNSET
    tags: list[str] | None = strawberry.UNSET
    agent_id: relay.GlobalID | None = strawberry.UNSET
    vector: list[float] | None = strawberry.field(default=None, description=VECTOR)
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)

    def to_patch(self) -> KnowledgePatch:
        agent = given_nullable(self.agent_id)
        tags = given(self.tags, field="tags")
        return KnowledgePatch(
            title=given(self.title, field="title"),
            content=given(self.content, field="content"),
            source=given(self.source, field="source"),
            tags=tags if tags is UNSET else tuple(tags),
            agent_id=(
                agent
                if agent is UNSET or agent is None
                else decode_id(agent, "Agent", field="agentId")
            ),
        )


@strawberry.input
class DeleteKnowledgeInput:
    id: relay.GlobalID
    expected_version: int | None = None
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.input
class RelateKnowledgeInput:
    source_id: relay.GlobalID
    target_id: relay.GlobalID
    type: KnowledgeRelationType
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.input
class UnrelateKnowledgeInput:
    source_id: relay.GlobalID
    target_id: relay.GlobalID
    type: KnowledgeRelationType
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.input
class RememberMemoryInput:
    agent_id: relay.GlobalID
    content: str
    kind: MemoryKind = MemoryKind.EPISODIC
    importance: float = 0.5
    context: JSON = strawberry.field(default_factory=dict)
    vector: list[float] | None = strawberry.field(default=None, description=VECTOR)
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class ForgetMemoryInput:
    id: relay.GlobalID
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class KnowledgePayload:
    knowledge: Knowledge | None
    user_errors: list[UserError]
    projected: bool = strawberry.field(description="True when Neo4j already shows the change.")


@strawberry.type
class KnowledgeRelationPayload:
    source: Knowledge | None
    target: Knowledge | None
    removed: bool = strawberry.field(description="For unrelateKnowledge: a link was there.")
    user_errors: list[UserError]
    projected: bool


@strawberry.type
class MemoryPayload:
    memory: Memory | None
    user_errors: list[UserError]


@strawberry.type
class KnowledgeMutations:
    @strawberry.mutation(
        description="Record a knowledge item, embedded on write. Operators and up."
    )
    async def create_knowledge(self, info: Info, input: CreateKnowledgeInput) -> KnowledgePayload:
        ctx = info.context

        async def run() -> Knowledge:
            data = KnowledgeInput(
                title=input.title,
                content=input.content,
                source=input.source,
                tags=tuple(input.tags),
                agent_id=(
                    decode_id(input.agent_id, "Agent", field="agentId") if input.agent_id else None
                ),
            )
            item = await resolve.create_knowledge(
                ctx, data, input.vector, idempotency_key=input.idempotency_key
            )
            return Knowledge.from_record(item)

        item, errors = await attempt(run())
        projected = await await_projection(ctx, input.wait_for_projection and item is not None)
        return KnowledgePayload(knowledge=item, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Change a knowledge item; new text is embedded again.")
    async def update_knowledge(self, info: Info, input: UpdateKnowledgeInput) -> KnowledgePayload:
        ctx = info.context

        async def run() -> Knowledge:
            item_id = decode_id(input.id, "Knowledge", field="id")
            item = await resolve.update_knowledge(
                ctx,
                item_id,
                input.to_patch(),
                input.vector,
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
            )
            return Knowledge.from_record(item)

        item, errors = await attempt(run())
        projected = await await_projection(ctx, input.wait_for_projection and item is not None)
        return KnowledgePayload(knowledge=item, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Remove a knowledge item and its links.")
    async def delete_knowledge(self, info: Info, input: DeleteKnowledgeInput) -> KnowledgePayload:
        ctx = info.context

        async def run() -> Knowledge:
            item_id = decode_id(input.id, "Knowledge", field="id")
            item = await resolve.delete_knowledge(
                ctx,
                item_id,
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
            )
            return Knowledge.from_record(item)

        item, errors = await attempt(run())
        projected = await await_projection(ctx, input.wait_for_projection and item is not None)
        return KnowledgePayload(knowledge=item, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Link two items (RELATES_TO, SUPPORTS, CONTRADICTS).")
    async def relate_knowledge(
        self, info: Info, input: RelateKnowledgeInput
    ) -> KnowledgeRelationPayload:
        ctx = info.context

        async def run() -> tuple[Knowledge | None, Knowledge | None]:
            link = await resolve.relate_knowledge(
                ctx,
                decode_id(input.source_id, "Knowledge", field="sourceId"),
                decode_id(input.target_id, "Knowledge", field="targetId"),
                input.type.value,
                idempotency_key=input.idempotency_key,
            )
            return (
                await Knowledge.load(info, link.source_id),
                await Knowledge.load(info, link.target_id),
            )

        ends, errors = await attempt(run())
        source, target = ends or (None, None)
        projected = await await_projection(ctx, input.wait_for_projection and not errors)
        return KnowledgeRelationPayload(
            source=source, target=target, removed=False, user_errors=errors, projected=projected
        )

    @strawberry.mutation(description="Remove a link between two items.")
    async def unrelate_knowledge(
        self, info: Info, input: UnrelateKnowledgeInput
    ) -> KnowledgeRelationPayload:
        ctx = info.context

        async def run() -> tuple[bool, Knowledge | None, Knowledge | None]:
            source_id = decode_id(input.source_id, "Knowledge", field="sourceId")
            target_id = decode_id(input.target_id, "Knowledge", field="targetId")
            removed = await resolve.unrelate_knowledge(
                ctx, source_id, target_id, input.type.value, idempotency_key=input.idempotency_key
            )
            return (
                removed,
                await Knowledge.load(info, source_id),
                await Knowledge.load(info, target_id),
            )

        outcome, errors = await attempt(run())
        removed, source, target = outcome or (False, None, None)
        projected = await await_projection(ctx, input.wait_for_projection and not errors)
        return KnowledgeRelationPayload(
            source=source, target=target, removed=removed, user_errors=errors, projected=projected
        )

    @strawberry.mutation(
        description="Give an agent a memory, embedded on write. Operators, or the agent itself."
    )
    async def remember_memory(self, info: Info, input: RememberMemoryInput) -> MemoryPayload:
        ctx = info.context

        async def run() -> Memory:
            data = MemoryInput(
                agent_id=decode_id(input.agent_id, "Agent", field="agentId"),
                content=input.content,
                kind=input.kind.value,
                importance=input.importance,
                context=input.context,
            )
            memory = await resolve.remember_memory(
                ctx, data, input.vector, idempotency_key=input.idempotency_key
            )
            return Memory.from_record(memory)

        memory, errors = await attempt(run())
        return MemoryPayload(memory=memory, user_errors=errors)

    @strawberry.mutation(description="Drop a memory. Operators, or the agent itself.")
    async def forget_memory(self, info: Info, input: ForgetMemoryInput) -> MemoryPayload:
        ctx = info.context

        async def run() -> Memory:
            memory = await resolve.forget_memory(
                ctx,
                decode_id(input.id, "Memory", field="id"),
                idempotency_key=input.idempotency_key,
            )
            return Memory.from_record(memory)

        memory, errors = await attempt(run())
        return MemoryPayload(memory=memory, user_errors=errors)
