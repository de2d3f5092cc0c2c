"""PostgreSQL: the source of truth."""

from stores.postgres.achievements import AchievementRepository
from stores.postgres.agent_grants import AgentGrantRepository
from stores.postgres.agents import AgentRepository
from stores.postgres.audit import AuditRepository
from stores.postgres.options import PostgresOptions
from stores.postgres.pagination import Page, PageRequest
from stores.postgres.store import PostgresStore
from stores.postgres.tasks import TaskRepository
from stores.postgres.users import UserRepository
from stores.postgres.workflows import WorkflowRepository

__all__ = [
    "AchievementRepository",
    "AgentGrantRepository",
    "AgentRepository",
    "AuditRepository",
    "Page",
    "PageRequest",
    "PostgresOptions",
    "PostgresStore",
    "TaskRepository",
    "UserRepository",
    "WorkflowRepository",
]
