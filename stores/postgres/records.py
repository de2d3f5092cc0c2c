"""Plain records the PostgreSQL store returns; never driver rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

JSON = dict[str, Any]


class ColumnRow(Protocol):
    """A row of the columns a selection reads, by position: an asyncpg `Record` as
    read (copying each into a tuple cost more than indexing it) or a tuple."""

    def __getitem__(self, index: int, /) -> Any: ...

    def __len__(self) -> int: ...


@dataclass(frozen=True, slots=True)
class WriteContext:
    """Who is writing and from where: goes into the audit log with the change."""

    actor_id: UUID | None
    request_id: str
    client_address: str | None = None
    idempotency_key: str | None = None
    # The outbox rows this write queued, appended as they are written: a mutation
    # waits for exactly these to reach Neo4j (ids commit out of order, so waiting
    # for the newest id proves nothing about one's own).
    outbox_ids: list[int] = field(default_factory=list)
    # The resource types this write audits, appended as each audit row is queued, before
    # its statement runs (a write that audits nothing changed no entity: the entity
    # cache has nothing to settle; one that failed only settles it once more).
    audited: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class User:
    id: UUID
    email: str
    display_name: str
    role: str
    created_at: datetime
    # Set while an admin has disabled the user: its keys and sessions do not work.
    disabled_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SignInState:
    """What a session's standing depends on, read afresh from the source of truth."""

    role: str
    enabled: bool
    # The API key that opened the session is neither revoked nor expired.
    key_live: bool
    # The user may still act as the agent the session is bound to.
    may_act: bool


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: UUID
    user_id: UUID
    name: str
    prefix: str
    scopes: tuple[str, ...]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class AgentGrant:
    """`user_id` may act as `agent_id` (bind a session to it, write as it)."""

    id: UUID
    user_id: UUID
    agent_id: UUID
    granted_by: UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Agent:
    id: UUID
    name: str
    role: str
    status: str
    capabilities: tuple[str, ...]
    tags: tuple[str, ...]
    notes: str
    metadata: JSON
    parent_id: UUID | None
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class AgentRelationship:
    source_id: UUID
    target_id: UUID
    type: str
    weight: float
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Task:
    id: UUID
    title: str
    description: str
    repository: str | None
    type: str
    payload: JSON
    priority: int
    status: str
    assignee_id: UUID | None
    creator_id: UUID | None
    workflow_id: UUID | None
    deadline: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    result: JSON | None
    error_message: str | None
    retry_count: int
    max_retries: int
    created_at: datetime
    updated_at: datetime
    version: int
    # Work distribution (stores/postgres/task_claims.py); defaults replay events
    # recorded before tasks had them.
    required_capabilities: tuple[str, ...] = ()
    lease_expires_at: datetime | None = None
    fencing_token: int = 0
    # Last, with a default: events written before the column existed replay without it.
    worktree_path: str | None = None


@dataclass(frozen=True, slots=True)
class TaskEvent:
    id: int
    task_id: UUID
    version: int
    type: str
    data: JSON
    actor_id: UUID | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Workflow:
    id: UUID
    name: str
    definition: JSON
    status: str
    created_at: datetime
    updated_at: datetime
    version: int


@dataclass(frozen=True, slots=True)
class Achievement:
    id: UUID
    agent_id: UUID
    type: str
    points: int
    awarded_at: datetime


@dataclass(frozen=True, slots=True)
class LeaderboardEntry:
    agent_id: UUID
    points: int
    achievements: int


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    actor_id: UUID | None
    action: str
    resource_type: str
    resource_id: str | None
    old_value: JSON | None
    new_value: JSON | None
    request_id: str | None
    client_address: str | None
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TrustedDocument:
    """A registered operation (see `polygraph documents push`)."""

    id: str
    sha256: str
    body: str
    client_name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class EventSink:
    id: UUID
    url: str
    events: tuple[str, ...]
    description: str
    paused: bool
    delivered: int
    retried: int
    dropped: int
    # Matched events waiting for delivery (or for their next attempt).
    pending: int
    last_delivered_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    created_by: UUID | None
    created_at: datetime
