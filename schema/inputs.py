"""Filter inputs for lists. Each turns itself into the store's filter record."""

from __future__ import annotations

from datetime import datetime

import strawberry
from strawberry import relay

from schema.enums import AgentStatus, TaskStatus, WorkflowStatus
from schema.relay import decode_id
from schema.scalars import JSON
from stores.postgres.inputs import UNSET
from stores.postgres.inputs import AgentFilter as StoreAgentFilter
from stores.postgres.inputs import AuditFilter as StoreAuditFilter
from stores.postgres.inputs import TaskFilter as StoreTaskFilter
from stores.postgres.inputs import WorkflowFilter as StoreWorkflowFilter


@strawberry.input(description="All given conditions must hold.")
class AgentFilter:
    status: list[AgentStatus] | None = None
    role: list[str] | None = None
    tags_any: list[str] | None = strawberry.field(default=None, description="Has any of these.")
    capabilities_all: list[str] | None = strawberry.field(
        default=None, description="Has all of these."
    )
    name_contains: str | None = None
    parent_id: relay.GlobalID | None = None
    metadata_contains: JSON | None = strawberry.field(
        default=None, description="JSON containment (`@>`), served by a GIN index."
    )

    def to_store(self) -> StoreAgentFilter:
        return StoreAgentFilter(
            statuses=[s.value for s in self.status] if self.status else None,
            roles=self.role or None,
            tags_any=self.tags_any or None,
            capabilities_all=self.capabilities_all or None,
            name_contains=self.name_contains,
            parent_id=(
                decode_id(self.parent_id, "Agent", field="filter.parentId")
                if self.parent_id
                else UNSET
            ),
            metadata_contains=self.metadata_contains,
        )


@strawberry.input(description="All given conditions must hold.")
class TaskFilter:
    status: list[TaskStatus] | None = None
    min_priority: int | None = None
    max_priority: int | None = None
    assignee_id: relay.GlobalID | None = None
    unassigned: bool = strawberry.field(default=False, description="Only tasks nobody has.")
    workflow_id: relay.GlobalID | None = None
    type: list[str] | None = None
    title_contains: str | None = None

    def to_store(self) -> StoreTaskFilter:
        return StoreTaskFilter(
            statuses=[s.value for s in self.status] if self.status else None,
            min_priority=self.min_priority,
            max_priority=self.max_priority,
            assignee_id=(
                decode_id(self.assignee_id, "Agent", field="filter.assigneeId")
                if self.assignee_id
                else None
                if self.unassigned
                else UNSET
            ),
            workflow_id=(
                decode_id(self.workflow_id, "Workflow", field="filter.workflowId")
                if self.workflow_id
                else None
            ),
            types=self.type or None,
            title_contains=self.title_contains,
        )


@strawberry.input
class WorkflowFilter:
    status: list[WorkflowStatus] | None = None
    name_contains: str | None = None

    def to_store(self) -> StoreWorkflowFilter:
        return StoreWorkflowFilter(
            statuses=[s.value for s in self.status] if self.status else None,
            name_contains=self.name_contains,
        )


@strawberry.input(description="All given conditions must hold.")
class AuditFilter:
    actor_id: relay.GlobalID | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def to_store(self) -> StoreAuditFilter:
        return StoreAuditFilter(
            actor_id=(
                decode_id(self.actor_id, "User", field="filter.actorId") if self.actor_id else None
            ),
            resource_type=self.resource_type,
            resource_id=self.resource_id,
            action=self.action,
            since=self.since,
            until=self.until,
        )
