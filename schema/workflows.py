"""The Workflow node: a DAG of steps, stored in PostgreSQL and projected to Neo4j."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers.context import RequestContext
from schema.enums import WORKFLOW_STATUS, WorkflowStatus
from schema.federation import ENTITY_KEY, entity_by_reference
from schema.relay import CountedConnection, encode_id, node_id_field, nodes_by_ids
from schema.scalars import JSON
from stores.postgres import records

Info = strawberry.Info[RequestContext, None]


@strawberry.type(
    description="A set of steps and the edges that order them.", directives=[ENTITY_KEY]
)
class Workflow(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    name: str
    definition: JSON = strawberry.field(
        description='{"steps": [{"id", "name", "estimate"}], "edges": [{"from", "to"}]}'
    )
    status: WorkflowStatus
    created_at: datetime
    updated_at: datetime
    version: int
    record: strawberry.Private[records.Workflow]

    @classmethod
    def from_record(cls, workflow: records.Workflow) -> Workflow:
        return cls(
            id=str(workflow.id),
            _id=encode_id("Workflow", workflow.id),
            name=workflow.name,
            definition=workflow.definition,
            status=WORKFLOW_STATUS[workflow.status],
            created_at=workflow.created_at,
            updated_at=workflow.updated_at,
            version=workflow.version,
            record=workflow,
        )

    @classmethod
    async def load(cls, info: Info, workflow_id: UUID | None) -> Workflow | None:
        if workflow_id is None:
            return None
        found = await info.context.loaders.workflow_by_id.load(workflow_id)
        return cls.from_record(found) if found else None

    @classmethod
    async def resolve_reference(cls, info: Info, id: str) -> Workflow | None:
        return await entity_by_reference(cls, info, id)

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[Workflow | None]:
        return await nodes_by_ids(info.context.loaders.workflow_by_id, node_ids, cls.from_record)


@strawberry.type
class WorkflowConnection(CountedConnection[Workflow]):
    pass
