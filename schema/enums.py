"""Enums clients see. Values are what the stores keep."""

from __future__ import annotations

import enum
from typing import TypeVar

import strawberry

E = TypeVar("E", bound=enum.Enum)


def by_value(enum_class: type[E]) -> dict[str, E]:
    """Members by stored value. `Enum(value)` costs a few microseconds a call, and a page
    of tasks and links converts thousands of values per request; a dict lookup does not."""
    return {member.value: member for member in enum_class}


@strawberry.enum(description="What an agent is doing.")
class AgentStatus(enum.Enum):
    IDLE = "idle"
    ACTIVE = "active"
    BUSY = "busy"
    OFFLINE = "offline"
    ERROR = "error"


@strawberry.enum(
    description="Task lifecycle: PENDING -> ASSIGNED -> IN_PROGRESS -> COMPLETED | FAILED; "
    "FAILED -> PENDING while retries remain; CANCELLED from any open state."
)
class TaskStatus(enum.Enum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


@strawberry.enum
class WorkflowStatus(enum.Enum):
    DRAFT = "draft"
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"
    ARCHIVED = "archived"


@strawberry.enum(description="Who may do what; each role includes the ones below it.")
class UserRole(enum.Enum):
    ADMIN = "admin"
    OPERATOR = "operator"
    AGENT = "agent"
    VIEWER = "viewer"


@strawberry.enum(description="Relationships between agents in the agent graph.")
class AgentRelationshipType(enum.Enum):
    COLLABORATES_WITH = "COLLABORATES_WITH"
    DELEGATES_TO = "DELEGATES_TO"
    PARENT_OF = "PARENT_OF"


@strawberry.enum(description="Relationships an agent-to-agent link can be created with.")
class AgentLinkType(enum.Enum):
    COLLABORATES_WITH = "COLLABORATES_WITH"
    DELEGATES_TO = "DELEGATES_TO"


@strawberry.enum
class AgentOrder(enum.Enum):
    CREATED_AT_ASC = "CREATED_AT_ASC"
    CREATED_AT_DESC = "CREATED_AT_DESC"
    NAME_ASC = "NAME_ASC"
    NAME_DESC = "NAME_DESC"


@strawberry.enum
class TaskOrder(enum.Enum):
    CREATED_AT_ASC = "CREATED_AT_ASC"
    CREATED_AT_DESC = "CREATED_AT_DESC"
    PRIORITY_DESC = "PRIORITY_DESC"
    PRIORITY_ASC = "PRIORITY_ASC"
    DEADLINE_ASC = "DEADLINE_ASC"


@strawberry.enum
class WorkflowOrder(enum.Enum):
    CREATED_AT_ASC = "CREATED_AT_ASC"
    CREATED_AT_DESC = "CREATED_AT_DESC"
    NAME_ASC = "NAME_ASC"
    NAME_DESC = "NAME_DESC"


AGENT_STATUS = by_value(AgentStatus)
TASK_STATUS = by_value(TaskStatus)
WORKFLOW_STATUS = by_value(WorkflowStatus)
AGENT_RELATIONSHIP = by_value(AgentRelationshipType)
