"""Agent mutations: rows, audit and outbox in one PostgreSQL transaction each."""

from __future__ import annotations

import strawberry
from strawberry import relay

from resolvers import agents as resolve
from resolvers.context import RequestContext
from resolvers.writes import await_projection
from schema.agents import Agent
from schema.enums import AgentLinkType, AgentStatus
from schema.idempotency import idempotency_key
from schema.patch import given, given_nullable
from schema.relay import decode_id
from schema.scalars import JSON
from schema.user_errors import UserError, attempt
from stores.postgres.inputs import UNSET, AgentInput, AgentPatch

Info = strawberry.Info[RequestContext, None]

WAIT = "Wait, bounded, until the agent graph in Neo4j shows this change."


@strawberry.input
class CreateAgentInput:
    name: str
    role: str = "worker"
    status: AgentStatus = AgentStatus.IDLE
    capabilities: list[str] = strawberry.field(default_factory=list)
    tags: list[str] = strawberry.field(default_factory=list)
    notes: str = ""
    metadata: JSON = strawberry.field(default_factory=dict)
    parent_id: relay.GlobalID | None = None
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.input(description="Only the fields given change; `parentId: null` detaches.")
class UpdateAgentInput:
    id: relay.GlobalID
    expected_version: int | None = strawberry.field(
        default=None, description="Refuse with CONFLICT if the agent changed since this version."
    )
    name: str | None = strawberry.UNSET
    role: str | None = strawberry.UNSET
    status: AgentStatus | None = strawberry.UNSET
    capabilities: list[str] | None = strawberry.UNSET
    tags: list[str] | None = strawberry.UNSET
    notes: str | None = strawberry.UNSET
    metadata: JSON | None = strawberry.UNSET
    parent_id: relay.GlobalID | None = strawberry.UNSET
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)

    def to_patch(self) -> AgentPatch:
        status = given(self.status, field="status")
        parent = given_nullable(self.parent_id)
        return AgentPatch(
            name=given(self.name, field="name"),
            role=given(self.role, field="role"),
            status=status if status is UNSET else status.value,
            capabilities=given(self.capabilities, field="capabilities"),
            tags=given(self.tags, field="tags"),
            notes=given(self.notes, field="notes"),
            metadata=given(self.metadata, field="metadata"),
            parent_id=(
                parent
                if parent is UNSET or parent is None
                else decode_id(parent, "Agent", field="parentId")
            ),
        )


@strawberry.input
class DeleteAgentInput:
    id: relay.GlobalID
    expected_version: int | None = None
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.input
class RelateAgentsInput:
    source_id: relay.GlobalID
    target_id: relay.GlobalID
    type: AgentLinkType
    weight: float = 1.0
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.input
class UnrelateAgentsInput:
    source_id: relay.GlobalID
    target_id: relay.GlobalID
    type: AgentLinkType
    idempotency_key: str | None = idempotency_key()
    wait_for_projection: bool = strawberry.field(default=True, description=WAIT)


@strawberry.type
class AgentPayload:
    agent: Agent | None
    user_errors: list[UserError]
    projected: bool = strawberry.field(description="True when Neo4j already shows the change.")


@strawberry.type
class RelationshipPayload:
    source: Agent | None
    target: Agent | None
    removed: bool = strawberry.field(description="For unrelateAgents: a link was there.")
    user_errors: list[UserError]
    projected: bool


@strawberry.type
class AgentMutations:
    @strawberry.mutation(description="Register an agent. Operators and up.")
    async def create_agent(self, info: Info, input: CreateAgentInput) -> AgentPayload:
        ctx = info.context

        async def run() -> Agent:
            data = AgentInput(
                name=input.name,
                role=input.role,
                status=input.status.value,
                capabilities=input.capabilities,
                tags=input.tags,
                notes=input.notes,
                metadata=input.metadata,
                parent_id=(
                    decode_id(input.parent_id, "Agent", field="parentId")
                    if input.parent_id
                    else None
                ),
            )
            agent = await resolve.create_agent(ctx, data, idempotency_key=input.idempotency_key)
            return Agent.from_record(agent)

        agent, errors = await attempt(run())
        projected = await await_projection(ctx, input.wait_for_projection and agent is not None)
        return AgentPayload(agent=agent, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Change an agent. Agents may set their own status.")
    async def update_agent(self, info: Info, input: UpdateAgentInput) -> AgentPayload:
        ctx = info.context

        async def run() -> Agent:
            agent_id = decode_id(input.id, "Agent", field="id")
            agent = await resolve.update_agent(
                ctx,
                agent_id,
                input.to_patch(),
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
            )
            return Agent.from_record(agent)

        agent, errors = await attempt(run())
        projected = await await_projection(ctx, input.wait_for_projection and agent is not None)
        return AgentPayload(agent=agent, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Remove an agent and its relationships. Admins only.")
    async def delete_agent(self, info: Info, input: DeleteAgentInput) -> AgentPayload:
        ctx = info.context

        async def run() -> Agent:
            agent_id = decode_id(input.id, "Agent", field="id")
            agent = await resolve.delete_agent(
                ctx,
                agent_id,
                expected_version=input.expected_version,
                idempotency_key=input.idempotency_key,
            )
            return Agent.from_record(agent)

        agent, errors = await attempt(run())
        projected = await await_projection(ctx, input.wait_for_projection and agent is not None)
        return AgentPayload(agent=agent, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Link two agents (COLLABORATES_WITH, DELEGATES_TO).")
    async def relate_agents(self, info: Info, input: RelateAgentsInput) -> RelationshipPayload:
        ctx = info.context

        async def run() -> tuple[Agent | None, Agent | None]:
            link = await resolve.relate_agents(
                ctx,
                decode_id(input.source_id, "Agent", field="sourceId"),
                decode_id(input.target_id, "Agent", field="targetId"),
                input.type.value,
                input.weight,
                idempotency_key=input.idempotency_key,
            )
            return await Agent.load(info, link.source_id), await Agent.load(info, link.target_id)

        ends, errors = await attempt(run())
        source, target = ends or (None, None)
        projected = await await_projection(ctx, input.wait_for_projection and not errors)
        return RelationshipPayload(
            source=source, target=target, removed=False, user_errors=errors, projected=projected
        )

    @strawberry.mutation(description="Remove a link between two agents.")
    async def unrelate_agents(self, info: Info, input: UnrelateAgentsInput) -> RelationshipPayload:
        ctx = info.context

        async def run() -> tuple[bool, Agent | None, Agent | None]:
            source_id = decode_id(input.source_id, "Agent", field="sourceId")
            target_id = decode_id(input.target_id, "Agent", field="targetId")
            removed = await resolve.unrelate_agents(
                ctx, source_id, target_id, input.type.value, idempotency_key=input.idempotency_key
            )
            return removed, await Agent.load(info, source_id), await Agent.load(info, target_id)

        outcome, errors = await attempt(run())
        removed, source, target = outcome or (False, None, None)
        projected = await await_projection(ctx, input.wait_for_projection and not errors)
        return RelationshipPayload(
            source=source, target=target, removed=removed, user_errors=errors, projected=projected
        )
