"""What callers hand the PostgreSQL repositories: new records, patches, filters and orders.

In a patch, `UNSET` means "leave as it is" and `None` means "set to null", so a
client can clear a nullable field without touching the others.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final
from uuid import UUID

import orjson

from stores.errors import InvalidInput
from stores.postgres.pagination import check_page_size
from stores.postgres.records import JSON


class Unset(enum.Enum):
    UNSET = enum.auto()

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentInput:
    name: str
    role: str = "worker"
    status: str = "idle"
    capabilities: Sequence[str] = ()
    tags: Sequence[str] = ()
    notes: str = ""
    metadata: JSON = field(default_factory=dict)
    parent_id: UUID | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentPatch:
    name: str | Unset = UNSET
    role: str | Unset = UNSET
    status: str | Unset = UNSET
    capabilities: Sequence[str] | Unset = UNSET
    tags: Sequence[str] | Unset = UNSET
    notes: str | Unset = UNSET
    metadata: JSON | Unset = UNSET
    parent_id: UUID | Unset | None = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentFilter:
    """Every given criterion must hold. `parent_id=None` keeps only agents without a parent."""

    statuses: Sequence[str] | None = None
    roles: Sequence[str] | None = None
    tags_any: Sequence[str] | None = None
    capabilities_all: Sequence[str] | None = None
    name_contains: str | None = None
    parent_id: UUID | Unset | None = UNSET
    metadata_contains: JSON | None = None
    # Only these agents (agentsOnline: the ones online now).
    ids: Sequence[UUID] | None = None


class AgentOrder(enum.Enum):
    CREATED_AT_ASC = "CREATED_AT_ASC"
    CREATED_AT_DESC = "CREATED_AT_DESC"
    NAME_ASC = "NAME_ASC"
    NAME_DESC = "NAME_DESC"


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskInput:
    """A new task. With an assignee it starts `assigned`, otherwise `pending`."""

    title: str
    description: str = ""
    repository: str | None = None
    type: str = "generic"
    payload: JSON = field(default_factory=dict)
    priority: int = 5
    assignee_id: UUID | None = None
    creator_id: UUID | None = None
    workflow_id: UUID | None = None
    deadline: datetime | None = None
    max_retries: int = 3
    # Only a claimer with all of these may claim it (claimNextTask).
    required_capabilities: Sequence[str] = ()
    worktree_path: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskPatch:
    """Fields that change without a state transition; status and assignee go through
    `TaskRepository.transition`."""

    title: str | Unset = UNSET
    description: str | Unset = UNSET
    repository: str | Unset | None = UNSET
    type: str | Unset = UNSET
    payload: JSON | Unset = UNSET
    priority: int | Unset = UNSET
    workflow_id: UUID | Unset | None = UNSET
    deadline: datetime | Unset | None = UNSET
    max_retries: int | Unset = UNSET
    required_capabilities: Sequence[str] | Unset = UNSET
    worktree_path: str | Unset | None = UNSET


@dataclass(frozen=True, slots=True, kw_only=True)
class TaskFilter:
    """Every given criterion must hold. `assignee_id=None` keeps only unassigned tasks."""

    statuses: Sequence[str] | None = None
    assignee_id: UUID | Unset | None = UNSET
    creator_id: UUID | None = None
    workflow_id: UUID | None = None
    types: Sequence[str] | None = None
    min_priority: int | None = None
    max_priority: int | None = None
    title_contains: str | None = None


class TaskOrder(enum.Enum):
    """Ties break by creation time then id, in the same direction."""

    # Members are singletons compared by identity; Enum's own hash is a Python call
    # per hash, and a page of agents hashes one per agent in its loader keys.
    __hash__ = object.__hash__

    CREATED_AT_ASC = "CREATED_AT_ASC"
    CREATED_AT_DESC = "CREATED_AT_DESC"
    PRIORITY_DESC = "PRIORITY_DESC"
    PRIORITY_ASC = "PRIORITY_ASC"
    DEADLINE_ASC = "DEADLINE_ASC"


@dataclass(frozen=True, slots=True)
class TasksOfEach:
    """Which tasks of each agent a statement over agents also reads: the first `first`
    in `order`, of `columns`, with `statuses` only, counted when `with_total` (what
    `TaskRepository.columns_for_assignees` reads for a list of agent ids)."""

    columns: tuple[str, ...]
    first: int
    statuses: tuple[str, ...] | None = None
    order: TaskOrder = TaskOrder.CREATED_AT_DESC
    with_total: bool = False

    def __post_init__(self) -> None:
        check_page_size(self.first)


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkflowFilter:
    statuses: Sequence[str] | None = None
    name_contains: str | None = None


class WorkflowOrder(enum.Enum):
    CREATED_AT_ASC = "CREATED_AT_ASC"
    CREATED_AT_DESC = "CREATED_AT_DESC"
    NAME_ASC = "NAME_ASC"
    NAME_DESC = "NAME_DESC"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditFilter:
    """Every given criterion must hold; `since` is inclusive, `until` exclusive."""

    actor_id: UUID | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def check_text(field: str, value: object, longest: int) -> None:
    if not isinstance(value, str) or not value.strip() or len(value) > longest:
        raise InvalidInput(field, f"must be 1 to {longest} characters, not only spaces")


def check_int(field: str, value: object, lowest: int, highest: int) -> None:
    # bool is an int to Python, never to a client.
    if isinstance(value, bool) or not isinstance(value, int) or not lowest <= value <= highest:
        raise InvalidInput(field, f"must be a whole number from {lowest} to {highest}")


def check_json_object(field: str, value: object, limit: int) -> None:
    if not isinstance(value, dict):
        raise InvalidInput(field, "must be a JSON object")
    size = json_size(value)
    if size > limit:
        raise InvalidInput(
            field, f"is {size} bytes; the limit is {limit // 1024} KiB, keep large data elsewhere"
        )


def json_size(value: object) -> int:
    return len(orjson.dumps(value))


def like_pattern(text: str) -> str:
    """An ILIKE pattern matching `text` anywhere, with its wildcards taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
