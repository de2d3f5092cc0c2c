from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from uuid import UUID

import strawberry
from strawberry import relay

from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.users import list_api_keys
from schema.enums import UserRole
from schema.relay import encode_id, node_id_field, nodes_by_ids
from stores.postgres import records

Info = strawberry.Info[RequestContext, None]


@strawberry.type(description="A person or service that signs in with an API key.")
class User(relay.Node):
    id: relay.NodeID[str]
    _id: relay.GlobalID = node_id_field()
    display_name: str
    role: UserRole
    created_at: datetime
    disabled_at: datetime | None = strawberry.field(
        description="Set while an admin has disabled the user."
    )
    record: strawberry.Private[records.User]

    @classmethod
    def from_record(cls, user: records.User) -> User:
        return cls(
            id=str(user.id),
            _id=encode_id("User", user.id),
            display_name=user.display_name,
            role=UserRole(user.role),
            created_at=user.created_at,
            disabled_at=user.disabled_at,
            record=user,
        )

    @classmethod
    async def load(cls, info: Info, user_id: UUID | None) -> User | None:
        if user_id is None:
            return None
        found = await info.context.loaders.user_by_id.load(user_id)
        return cls.from_record(found) if found else None

    @classmethod
    async def resolve_nodes(  # type: ignore[override]
        cls, *, info: Info, node_ids: Iterable[str], required: bool = False
    ) -> list[User | None]:
        return await nodes_by_ids(info.context.loaders.user_by_id, node_ids, cls.from_record)

    @strawberry.field(description="Visible to the user themself and to admins.")
    def email(self, info: Info) -> str:
        if info.context.principal.user_id != self.record.id:
            require(info.context.principal, at_least=Role.ADMIN)
        return self.record.email

    @strawberry.field(description="The user's API keys, without secrets. The user and admins.")
    async def api_keys(self, info: Info) -> list[ApiKey] | None:
        return [
            ApiKey.from_record(key) for key in await list_api_keys(info.context, self.record.id)
        ]


@strawberry.type(description="An API key's metadata; the secret is shown once, at creation.")
class ApiKey:
    id: strawberry.ID
    name: str
    prefix: str
    scopes: list[str]
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime

    @classmethod
    def from_record(cls, key: records.ApiKey) -> ApiKey:
        return cls(
            id=strawberry.ID(str(key.id)),
            name=key.name,
            prefix=key.prefix,
            scopes=list(key.scopes),
            expires_at=key.expires_at,
            last_used_at=key.last_used_at,
            revoked_at=key.revoked_at,
            created_at=key.created_at,
        )
