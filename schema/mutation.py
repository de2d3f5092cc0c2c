from __future__ import annotations

from strawberry.tools import merge_types

from schema.mutations.agents import AgentMutations
from schema.mutations.tasks import TaskMutations
from schema.mutations.users import UserMutations
from schema.mutations.workflows import WorkflowMutations

Mutation = merge_types(
    "Mutation", (UserMutations, AgentMutations, TaskMutations, WorkflowMutations)
)
