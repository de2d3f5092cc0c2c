"""Answers from the agent, task and workflow graphs (Neo4j)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import strawberry

from resolvers.context import RequestContext
from schema.enums import AGENT_RELATIONSHIP, AgentRelationshipType
from schema.selection import selects
from stores.graph import records
from stores.postgres.records import Workflow

if TYPE_CHECKING:
    from schema.agents import Agent
    from schema.tasks import Task

Info = strawberry.Info[RequestContext, None]
AgentRef = Annotated["Agent", strawberry.lazy("schema.agents")]
TaskRef = Annotated["Task", strawberry.lazy("schema.tasks")]


async def _agent(info: Info, agent_id: UUID) -> Agent | None:
    from schema.agents import Agent

    return await Agent.load(info, agent_id)


@strawberry.type(description="An agent and how many hops away it is.")
class NeighbourNode:
    distance: int
    agent: AgentRef | None


@strawberry.type(description="A relationship between two agents.")
class AgentLink:
    type: AgentRelationshipType
    weight: float | None
    source: AgentRef | None
    target: AgentRef | None


@strawberry.type(description="The agents and relationships around one agent.")
class AgentNeighbourhood:
    nodes: list[NeighbourNode]
    edges: list[AgentLink]

    @classmethod
    async def load(cls, info: Info, found: records.Neighbourhood) -> AgentNeighbourhood:
        """Every agent the selection shows is fetched here in one batch and handed down,
        so a neighbourhood of hundreds of agents costs no async resolver per node or edge."""
        from schema.agents import Agent

        wanted = selects(info, "nodes", "agent") or any(
            selects(info, "edges", end) for end in ("source", "target")
        )
        agents = (
            await Agent.load_map(
                info,
                (n.agent_id for n in found.nodes),
                ("nodes", "agent"),
                ("edges", "source"),
                ("edges", "target"),
                settle=True,
            )
            if wanted
            else {}
        )
        return cls(
            nodes=[
                NeighbourNode(distance=n.distance, agent=agents.get(n.agent_id))
                for n in found.nodes
            ],
            edges=[
                AgentLink(
                    type=AGENT_RELATIONSHIP[e.type],
                    weight=e.weight,
                    source=agents.get(e.source),
                    target=agents.get(e.target),
                )
                for e in found.edges
            ],
        )


@strawberry.type(description="Agents from one end of a path to the other.")
class AgentPath:
    length: int
    agent_ids: strawberry.Private[list[UUID]]

    @strawberry.field
    async def agents(self, info: Info) -> list[AgentRef]:
        from schema.agents import Agent

        return await Agent.load_many(info, self.agent_ids)


@strawberry.type(description="One step of a workflow definition.")
class WorkflowStep:
    id: str
    name: str
    estimate: float


@strawberry.type(description="The longest chain: what bounds how soon the whole can finish.")
class CriticalPath:
    total_estimate: float = strawberry.field(
        description="Sum of step estimates; for tasks, the number of tasks in the chain."
    )
    steps: list[WorkflowStep] = strawberry.field(description="Workflow steps, in order.")
    task_ids: strawberry.Private[list[UUID]]

    @classmethod
    def of_tasks(cls, chain: list[UUID]) -> CriticalPath:
        return cls(total_estimate=float(len(chain)), steps=[], task_ids=chain)

    @classmethod
    def of_workflow(cls, path: records.CriticalPath, workflow: Workflow) -> CriticalPath:
        steps = {
            str(step.get("id")): step
            for step in workflow.definition.get("steps", [])
            if isinstance(step, dict)
        }
        return cls(
            total_estimate=path.total_estimate,
            steps=[
                WorkflowStep(
                    id=step_id,
                    name=str(steps.get(step_id, {}).get("name", step_id)),
                    estimate=float(steps.get(step_id, {}).get("estimate", 1)),
                )
                for step_id in path.step_ids
            ],
            task_ids=[],
        )

    @strawberry.field(description="Tasks in order, when asked for a task's critical path.")
    async def tasks(self, info: Info) -> list[TaskRef]:
        from schema.tasks import Task

        return await Task.load_many(info, self.task_ids)


@strawberry.type(description="An agent and how many relationships it has.")
class ConnectedAgent:
    degree: int
    agent_id: strawberry.Private[UUID]

    @strawberry.field
    async def agent(self, info: Info) -> AgentRef | None:
        return await _agent(info, self.agent_id)
