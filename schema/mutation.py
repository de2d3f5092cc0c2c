from __future__ import annotations

from schema.agent_grants import AgentGrantMutations
from schema.conversation_roots import ConversationMutations
from schema.mutations.agents import AgentMutations
from schema.mutations.knowledge import KnowledgeMutations
from schema.mutations.metrics import MetricMutations
from schema.mutations.tasks import TaskMutations
from schema.mutations.users import UserMutations
from schema.mutations.workflows import WorkflowMutations

MUTATIONS: tuple[type, ...] = (
    UserMutations,
    AgentMutations,
    AgentGrantMutations,
    TaskMutations,
    WorkflowMutations,
    MetricMutations,
    KnowledgeMutations,
    ConversationMutations,
)
