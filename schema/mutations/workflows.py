"""Workflow and achievement mutations."""

from __future__ import annotations

import strawberry
from strawberry import relay

from resolvers import achievements
from resolvers import workflows as resolve
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.writes import await_projection
from schema.achievements import Achievement
from schema.enums import WorkflowStatus
from schema.idempotency import idempotency_key
from schema.patch import given
from schema.relay import decode_id
from schema.scalars import JSON
from schema.user_errors import UserError, attempt
from schema.workflows import Workflow
from stores.postgres.inputs import UNSET

Info = strawberry.Info[RequestContext, None]


@strawberry.input
class CreateWorkflowInput:
    name: str
    definition: JSON = strawberry.field(
        description='{"steps": [{"id", "name", "estimate"}], "edges": [{"from", "to"}]}; '
        "must be a DAG."
    )
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class UpdateWorkflowInput:
    id: relay.GlobalID
    expected_version: int | None = None
    name: str | None = strawberry.UNSET
    definition: JSON | None = strawberry.UNSET
    status: WorkflowStatus | None = strawberry.UNSET
    idempotency_key: str | None = idempotency_key()


@strawberry.input
class AwardAchievementInput:
    agent_id: relay.GlobalID
    type: str
    points: int
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class WorkflowPayload:
    workflow: Workflow | None
    user_errors: list[UserError]
    projected: bool


@strawberry.type
class AchievementPayload:
    achievement: Achievement | None
    user_errors: list[UserError]


@strawberry.type
class WorkflowMutations:
    @strawberry.mutation(description="Define a workflow. Operators and up.")
    async def create_workflow(self, info: Info, input: CreateWorkflowInput) -> WorkflowPayload:
        ctx = info.context

        async def run() -> Workflow:
            require(ctx.principal, at_least=Role.OPERATOR)
            workflow = await resolve.create_workflow(
                ctx, input.name, input.definition, idempotency_key=input.idempotency_key
            )
            return Workflow.from_record(workflow)

        workflow, errors = await attempt(run())
        projected = await await_projection(ctx, workflow is not None)
        return WorkflowPayload(workflow=workflow, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Rename, redefine or change the status of a workflow.")
    async def update_workflow(self, info: Info, input: UpdateWorkflowInput) -> WorkflowPayload:
        ctx = info.context

        async def run() -> Workflow:
            require(ctx.principal, at_least=Role.OPERATOR)
            name = given(input.name, field="name")
            definition = given(input.definition, field="definition")
            status = given(input.status, field="status")
            workflow = await resolve.update_workflow(
                ctx,
                decode_id(input.id, "Workflow", field="id"),
                expected_version=input.expected_version,
                name=None if name is UNSET else name,
                definition=None if definition is UNSET else definition,
                status=None if status is UNSET else status.value,
                idempotency_key=input.idempotency_key,
            )
            return Workflow.from_record(workflow)

        workflow, errors = await attempt(run())
        projected = await await_projection(ctx, workflow is not None)
        return WorkflowPayload(workflow=workflow, user_errors=errors, projected=projected)

    @strawberry.mutation(description="Award points to an agent. Operators and up.")
    async def award_achievement(
        self, info: Info, input: AwardAchievementInput
    ) -> AchievementPayload:
        ctx = info.context

        async def run() -> Achievement:
            require(ctx.principal, at_least=Role.OPERATOR)
            achievement = await achievements.award_achievement(
                ctx,
                decode_id(input.agent_id, "Agent", field="agentId"),
                input.type,
                input.points,
                idempotency_key=input.idempotency_key,
            )
            return Achievement.from_record(achievement)

        achievement, errors = await attempt(run())
        return AchievementPayload(achievement=achievement, user_errors=errors)
