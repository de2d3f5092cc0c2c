"""Live updates over graphql-transport-ws, fed by Redis pub/sub so every replica sees them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime
from functools import partial
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers.agents import AGENT_STATUS_CHANNEL
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.health import current_health, update_interval
from resolvers.live import agent_of_event, live_events, task_of_event
from resolvers.tasks import TASK_UPDATED_CHANNEL
from schema.agents import Agent
from schema.enums import AgentStatus, TaskStatus
from schema.health import Health
from schema.relay import require_ids
from schema.tasks import Task
from stores.postgres import records

Info = strawberry.Info[RequestContext, None]


@strawberry.input(description="Leave a field out to match everything.")
class TaskUpdatedFilter:
    task_ids: list[relay.GlobalID] | None = None
    assignee_ids: list[relay.GlobalID] | None = None
    status: list[TaskStatus] | None = None


@strawberry.input(description="Leave a field out to match everything.")
class AgentStatusFilter:
    agent_ids: list[relay.GlobalID] | None = None
    status: list[AgentStatus] | None = None


@strawberry.type(description="A task changed: its state after the change.")
class TaskUpdate:
    task: Task
    change: str = strawberry.field(description="The task event type, e.g. `started`.")
    at: datetime


@strawberry.type(description="An agent's status changed.")
class AgentStatusChange:
    agent: Agent
    previous_status: AgentStatus | None
    at: datetime


def _task_update(change: str, at: str, record: records.Task) -> TaskUpdate:
    return TaskUpdate(task=Task.from_record(record), change=change, at=datetime.fromisoformat(at))


def _status_change(previous: str | None, at: str, record: records.Agent) -> AgentStatusChange:
    return AgentStatusChange(
        agent=Agent.from_record(record),
        previous_status=AgentStatus(previous) if previous else None,
        at=datetime.fromisoformat(at),
    )


def _ids(values: list[relay.GlobalID] | None, type_name: str, field: str) -> set[UUID] | None:
    return set(require_ids(values, type_name, field=field)) if values else None


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="A health report every `intervalSeconds` (at least 1 s): one probe per "
        "interval serves every subscriber of a gateway."
    )
    async def health_updates(
        self, info: Info, interval_seconds: float = 5.0
    ) -> AsyncGenerator[Health, None]:
        stores = info.context.stores
        interval = update_interval(stores, interval_seconds)
        while True:
            yield Health.from_report(await current_health(stores, max_age_s=interval))
            await asyncio.sleep(interval)

    @strawberry.subscription(description="Tasks as they change, from any gateway replica.")
    async def task_updated(
        self, info: Info, filter: TaskUpdatedFilter | None = None
    ) -> AsyncGenerator[TaskUpdate, None]:
        require(info.context.principal, at_least=Role.VIEWER)
        wanted = filter or TaskUpdatedFilter()
        task_ids = _ids(wanted.task_ids, "Task", "filter.taskIds")
        assignee_ids = _ids(wanted.assignee_ids, "Agent", "filter.assigneeIds")
        statuses = {s.value for s in wanted.status} if wanted.status else None
        async for event in live_events(info.context, TASK_UPDATED_CHANNEL, shareable=True):
            task_id = UUID(event["task_id"])
            assignee = event.get("assignee_id")
            if task_ids is not None and task_id not in task_ids:
                continue
            if assignee_ids is not None and (
                assignee is None or UUID(assignee) not in assignee_ids
            ):
                continue
            if statuses is not None and event["status"] not in statuses:
                continue
            record = await task_of_event(info.context, event, task_id)
            if record is not None:
                # One payload object per event for every local subscriber, so the
                # executor runs the selection once per event and permission scope
                # (gateway/engine/events.py).
                yield event.memo(
                    "task_update", partial(_task_update, event["change"], event["at"], record)
                )

    @strawberry.subscription(description="Agent status changes, from any gateway replica.")
    async def agent_status_changed(
        self, info: Info, filter: AgentStatusFilter | None = None
    ) -> AsyncGenerator[AgentStatusChange, None]:
        require(info.context.principal, at_least=Role.VIEWER)
        wanted = filter or AgentStatusFilter()
        agent_ids = _ids(wanted.agent_ids, "Agent", "filter.agentIds")
        statuses = {s.value for s in wanted.status} if wanted.status else None
        async for event in live_events(info.context, AGENT_STATUS_CHANNEL, shareable=True):
            agent_id = UUID(event["agent_id"])
            if agent_ids is not None and agent_id not in agent_ids:
                continue
            if statuses is not None and event["status"] not in statuses:
                continue
            record = await agent_of_event(info.context, event, agent_id)
            if record is not None:
                previous = event.get("previous_status")
                yield event.memo(
                    "agent_status_change", partial(_status_change, previous, event["at"], record)
                )
