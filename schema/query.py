from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from typing import Protocol, TypeVar
from uuid import UUID

import strawberry
from aiodataloader import DataLoader
from strawberry import relay

from resolvers import achievements, audit, graph, tasks, users, workflows
from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode
from resolvers.health import current_health
from resolvers.sessions import list_sessions
from schema.achievements import LeaderboardEntry
from schema.agents import AgentConnection, agents_page
from schema.audit import AuditEntry, AuditEntryConnection
from schema.enums import AgentOrder, AgentRelationshipType, TaskOrder, WorkflowOrder
from schema.graph import AgentNeighbourhood, AgentPath, ConnectedAgent, CriticalPath
from schema.health import Health
from schema.inputs import AgentFilter, AuditFilter, TaskFilter, WorkflowFilter
from schema.relay import decode_id, page_request, wants_total
from schema.sessions import Session
from schema.tasks import Task, TaskConnection
from schema.users import ApiKey, User
from schema.workflows import Workflow, WorkflowConnection
from stores.postgres.inputs import AgentOrder as StoreAgentOrder
from stores.postgres.inputs import TaskOrder as StoreTaskOrder
from stores.postgres.inputs import WorkflowOrder as StoreWorkflowOrder

Info = strawberry.Info[RequestContext, None]


def _viewer(info: Info) -> None:
    require(info.context.principal, at_least=Role.VIEWER)


@strawberry.type
class Query:
    @strawberry.field(
        description="Health of the gateway and each store it uses, from a probe shared by "
        "every caller for a second."
    )
    async def health(self, info: Info) -> Health:
        return Health.from_report(await current_health(info.context.stores))

    @strawberry.field(description="Any object by its global id.")
    async def node(self, info: Info, id: relay.GlobalID) -> relay.Node | None:
        _viewer(info)
        return await _resolve_node(info, id)

    @strawberry.field(description="Several objects by global id, in the order asked.")
    async def nodes(self, info: Info, ids: list[relay.GlobalID]) -> list[relay.Node | None]:
        _viewer(info)
        return list(await asyncio.gather(*(_resolve_node(info, i) for i in ids)))

    @strawberry.field(description="The signed-in user; null when anonymous.")
    async def viewer(self, info: Info) -> User | None:
        return await User.load(info, info.context.principal.user_id)

    @strawberry.field
    async def agents(
        self,
        info: Info,
        filter: AgentFilter | None = None,
        order_by: AgentOrder = AgentOrder.CREATED_AT_ASC,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> AgentConnection:
        _viewer(info)
        return await agents_page(
            info,
            (filter or AgentFilter()).to_store(),
            StoreAgentOrder[order_by.name],
            page_request(first, after, last, before),
            with_total=wants_total(info),
        )

    @strawberry.field
    async def tasks(
        self,
        info: Info,
        filter: TaskFilter | None = None,
        order_by: TaskOrder = TaskOrder.CREATED_AT_DESC,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> TaskConnection:
        _viewer(info)
        page = await tasks.list_tasks(
            info.context,
            (filter or TaskFilter()).to_store(),
            StoreTaskOrder[order_by.name],
            page_request(first, after, last, before),
            with_total=wants_total(info),
        )
        _prime(info.context.loaders.task_by_id, page.items)
        return TaskConnection.from_page(page, Task.from_record)

    @strawberry.field
    async def workflows(
        self,
        info: Info,
        filter: WorkflowFilter | None = None,
        order_by: WorkflowOrder = WorkflowOrder.CREATED_AT_DESC,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> WorkflowConnection:
        _viewer(info)
        page = await workflows.list_workflows(
            info.context,
            (filter or WorkflowFilter()).to_store(),
            StoreWorkflowOrder[order_by.name],
            page_request(first, after, last, before),
            with_total=wants_total(info),
        )
        return WorkflowConnection.from_page(page, Workflow.from_record)

    @strawberry.field(
        description="Every mutation, newest first. Operators and up; fields you may not see "
        "are taken out of the values (`redacted`)."
    )
    async def audit_log(
        self,
        info: Info,
        filter: AuditFilter | None = None,
        first: int | None = None,
        after: str | None = None,
        last: int | None = None,
        before: str | None = None,
    ) -> AuditEntryConnection:
        page = await audit.audit_log(
            info.context,
            (filter or AuditFilter()).to_store(),
            page_request(first, after, last, before),
            with_total=wants_total(info),
        )
        return AuditEntryConnection.from_page(page, AuditEntry.from_visible)

    @strawberry.field(description="Agents by points from achievements.")
    async def leaderboard(
        self, info: Info, first: int = 10, since: datetime | None = None
    ) -> list[LeaderboardEntry]:
        _viewer(info)
        entries = await achievements.leaderboard(info.context, first=first, since=since)
        return [
            LeaderboardEntry(
                rank=rank,
                points=entry.points,
                achievements=entry.achievements,
                agent_id=entry.agent_id,
            )
            for rank, entry in enumerate(entries, start=1)
        ]

    @strawberry.field(description="Agents within `depth` hops in the agent graph (Neo4j).")
    async def agent_neighbourhood(
        self,
        info: Info,
        agent_id: relay.GlobalID,
        depth: int = 1,
        types: list[AgentRelationshipType] | None = None,
    ) -> AgentNeighbourhood:
        found = await graph.neighbourhood(
            info.context, decode_id(agent_id, "Agent", field="agentId"), depth, _types(types)
        )
        return await AgentNeighbourhood.load(info, found)

    @strawberry.field(description="The shortest chain of relationships between two agents.")
    async def shortest_path(
        self,
        info: Info,
        from_id: relay.GlobalID,
        to_id: relay.GlobalID,
        types: list[AgentRelationshipType] | None = None,
    ) -> AgentPath | None:
        path = await graph.shortest_path(
            info.context,
            decode_id(from_id, "Agent", field="fromId"),
            decode_id(to_id, "Agent", field="toId"),
            _types(types),
        )
        return None if path is None else AgentPath(length=len(path) - 1, agent_ids=path)

    @strawberry.field(
        description="Tasks that depend, directly or not, on this one (Neo4j), at most "
        "`first` of them in id order."
    )
    async def task_dependents(
        self, info: Info, task_id: relay.GlobalID, first: int = 10
    ) -> list[Task]:
        task = decode_id(task_id, "Task", field="taskId")
        ids = await graph.dependents(info.context, task, first=first)
        return await Task.load_many(info, ids)

    @strawberry.field(
        description="The longest chain through a workflow's steps (by estimate), or below a "
        "task through its unfinished dependencies. Give exactly one of the two ids."
    )
    async def critical_path(
        self,
        info: Info,
        workflow_id: relay.GlobalID | None = None,
        task_id: relay.GlobalID | None = None,
    ) -> CriticalPath | None:
        if (workflow_id is None) == (task_id is None):
            raise ClientError(
                ErrorCode.BAD_USER_INPUT,
                "give exactly one of workflowId and taskId",
                field="workflowId",
            )
        if task_id is not None:
            chain = await graph.task_critical_path(
                info.context, decode_id(task_id, "Task", field="taskId")
            )
            return CriticalPath.of_tasks(chain)
        assert workflow_id is not None
        found = await graph.workflow_critical_path(
            info.context, decode_id(workflow_id, "Workflow", field="workflowId")
        )
        return None if found is None else CriticalPath.of_workflow(*found)

    @strawberry.field(description="Agents with the most relationships.")
    async def most_connected_agents(
        self,
        info: Info,
        first: int = 10,
        types: list[AgentRelationshipType] | None = None,
    ) -> list[ConnectedAgent]:
        found = await graph.most_connected(info.context, first, _types(types))
        return [ConnectedAgent(degree=degree, agent_id=agent_id) for agent_id, degree in found]

    @strawberry.field(description="Your own live sessions.")
    async def my_sessions(self, info: Info) -> list[Session]:
        require(info.context.principal, at_least=Role.VIEWER)
        sessions = await list_sessions(info.context.stores, info.context.principal)
        return [Session.from_record(session) for session in sessions]

    @strawberry.field(description="Your own API keys (without their secrets).")
    async def my_api_keys(self, info: Info) -> list[ApiKey]:
        principal = info.context.principal
        require(principal, at_least=Role.VIEWER)
        assert principal.user_id is not None
        keys = await users.list_api_keys(info.context, principal.user_id)
        return [ApiKey.from_record(key) for key in keys]


class _HasId(Protocol):
    @property
    def id(self) -> UUID: ...


R = TypeVar("R", bound=_HasId)


def _prime(loader: DataLoader[UUID, R | None], records: Sequence[R]) -> None:
    """Seed a by-id loader with what a list already fetched, saving a round trip later."""
    for record in records:
        loader.prime(record.id, record)


def _types(types: list[AgentRelationshipType] | None) -> list[str] | None:
    return [t.value for t in types] if types else None


async def _resolve_node(info: Info, global_id: relay.GlobalID) -> relay.Node | None:
    try:
        node = await global_id.resolve_node(info, required=False)
    except (ValueError, KeyError, TypeError):
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"{global_id} is not an id of this API", field="id"
        ) from None
    return node if isinstance(node, relay.Node) else None
