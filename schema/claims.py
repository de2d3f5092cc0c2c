"""Work distribution: agents claim ready tasks, keep their leases, and hear of new work."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import datetime

import strawberry
from strawberry import relay

from resolvers import claims as resolve
from resolvers.context import RequestContext
from schema.idempotency import idempotency_key
from schema.relay import decode_id
from schema.tasks import Task
from schema.user_errors import UserError, attempt

Info = strawberry.Info[RequestContext, None]

CLAIMERS = (
    "Only a session bound to an agent (`login` with `agentId`) whose grant holds; it acts"
    " as that agent."
)


@strawberry.input
class ClaimNextTaskInput:
    capabilities: list[str] | None = strawberry.field(
        default=None,
        description="What this claimer can do; a task is claimed only when it has every"
        " capability the task requires. Omitted: the agent's registered capabilities.",
    )
    repository: str | None = strawberry.field(
        default=None, description="Only tasks of this repository."
    )
    wait_seconds: float = strawberry.field(
        default=0,
        description="Wait up to this long for work instead of returning no task at once"
        " (at most POLYGRAPH_CLAIM_MAX_WAIT_S).",
    )
    lease_seconds: float | None = strawberry.field(
        default=None,
        description="How long the claim holds without a heartbeat, 1 to 3600 s."
        " Omitted: POLYGRAPH_CLAIM_LEASE_S.",
    )
    idempotency_key: str | None = strawberry.field(
        default=None,
        description="A retry with the same key answers the task the first call claimed"
        " instead of claiming another; a call that claimed nothing keeps no key.",
    )


@strawberry.type
class ClaimNextTaskPayload:
    task: Task | None = strawberry.field(description="Null when no ready task came in time.")
    fencing_token: int | None = strawberry.field(
        description="Send it with heartbeatTask, startTask, completeTask and failTask."
    )
    lease_expires_at: datetime | None
    user_errors: list[UserError]


@strawberry.input
class HeartbeatTaskInput:
    id: relay.GlobalID
    fencing_token: int
    lease_seconds: float | None = strawberry.field(
        default=None, description="The lease from now, 1 to 3600 s. Omitted: the default."
    )
    idempotency_key: str | None = idempotency_key()


@strawberry.type
class HeartbeatTaskPayload:
    task: Task | None
    lease_expires_at: datetime | None
    user_errors: list[UserError]


@strawberry.type
class ClaimMutations:
    @strawberry.mutation(
        description="Claim the highest-priority ready task (every dependency completed) this"
        f" claimer's capabilities cover, under a lease and a fencing token. {CLAIMERS}"
    )
    async def claim_next_task(self, info: Info, input: ClaimNextTaskInput) -> ClaimNextTaskPayload:
        task, errors = await attempt(
            resolve.claim_next_task(
                info.context,
                capabilities=input.capabilities,
                repository=input.repository,
                wait_s=input.wait_seconds,
                lease_s=input.lease_seconds,
                idempotency_key=input.idempotency_key,
            )
        )
        return ClaimNextTaskPayload(
            task=Task.from_record(task) if task else None,
            fencing_token=task.fencing_token if task else None,
            lease_expires_at=task.lease_expires_at if task else None,
            user_errors=errors,
        )

    @strawberry.mutation(
        description="Extend the lease of a claimed task; a stale fencing token is refused"
        f" with CONFLICT. {CLAIMERS}"
    )
    async def heartbeat_task(self, info: Info, input: HeartbeatTaskInput) -> HeartbeatTaskPayload:
        async def run() -> Task:
            return Task.from_record(
                await resolve.heartbeat_task(
                    info.context,
                    decode_id(input.id, "Task", field="id"),
                    fencing_token=input.fencing_token,
                    lease_s=input.lease_seconds,
                    idempotency_key=input.idempotency_key,
                )
            )

        task, errors = await attempt(run())
        return HeartbeatTaskPayload(
            task=task,
            lease_expires_at=task.record.lease_expires_at if task else None,
            user_errors=errors,
        )


@strawberry.type
class ClaimSubscriptions:
    @strawberry.subscription(
        description="Tasks as they become ready for this claimer, from any gateway replica:"
        " created, a dependency completed, retried, or a lease lapsed. Still to be claimed"
        f" with claimNextTask (another claimer may be first). {CLAIMERS}"
    )
    async def task_available(
        self,
        info: Info,
        capabilities: list[str] | None = None,
        repository: str | None = None,
    ) -> AsyncGenerator[Task, None]:
        async for task in resolve.task_available(
            info.context, capabilities=capabilities, repository=repository
        ):
            yield Task.from_record(task)
