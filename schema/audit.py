from __future__ import annotations

from datetime import datetime
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers.audit import VisibleEntry
from resolvers.context import RequestContext
from schema.relay import CountedConnection
from schema.scalars import JSON

Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="One mutation as the audit log recorded it.")
class AuditEntry:
    id: strawberry.ID
    action: str
    resource_type: str
    resource_id: str | None
    old_value: JSON | None
    new_value: JSON | None
    request_id: str | None
    client_address: str | None
    created_at: datetime
    redacted: list[str] = strawberry.field(
        description="Fields taken out of the values because you may not see them, e.g. "
        "`newValue.email` (a user's email is for that user and admins)."
    )
    actor_id: strawberry.Private[UUID | None]

    @classmethod
    def from_visible(cls, visible: VisibleEntry) -> AuditEntry:
        entry = visible.entry
        return cls(
            redacted=list(visible.redacted),
            id=strawberry.ID(str(entry.id)),
            action=entry.action,
            resource_type=entry.resource_type,
            resource_id=entry.resource_id,
            old_value=entry.old_value,
            new_value=entry.new_value,
            request_id=entry.request_id,
            client_address=entry.client_address,
            created_at=entry.created_at,
            actor_id=entry.actor_id,
        )

    @strawberry.field(description="Global id of the user who made the change.")
    def actor(self) -> relay.GlobalID | None:
        return relay.GlobalID("User", str(self.actor_id)) if self.actor_id else None


@strawberry.type
class AuditEntryConnection(CountedConnection[AuditEntry]):  # type: ignore[type-var]
    pass
