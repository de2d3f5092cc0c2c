from __future__ import annotations

from schema.agent_grants import AgentGrantMutations
from schema.claims import ClaimMutations
from schema.conversation_roots import ConversationMutations
from schema.event_sinks import EventSinkMutations
from schema.mutations.agents import AgentMutations
from schema.mutations.knowledge import KnowledgeMutations
from schema.mutations.metrics import MetricMutations
from schema.mutations.tasks import TaskMutations
from schema.mutations.users import UserMutations
from schema.mutations.workflows import WorkflowMutations
from schema.presence import PresenceMutations

MUTATIONS: tuple[type, ...] = (
    UserMutations,
    AgentMutations,
    AgentGrantMutations,
    TaskMutations,
    ClaimMutations,
    WorkflowMutations,
    MetricMutations,
    KnowledgeMutations,
    EventSinkMutations,
    PresenceMutations,
    ConversationMutations,
)
