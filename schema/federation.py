"""Polygraph as an Apollo Federation v2 subgraph.

A router composes this schema into a supergraph (`_service { sdl }`) and fetches
Agent, Task, Workflow and Knowledge here by their key, the global id, through
`_entities(representations:)`. A reference is resolved as `node(id:)` resolves
an id, with the same permission (viewers and up) and the same answer for an id
of another type or of nothing: null.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeVar

import strawberry
from strawberry import relay
from strawberry.federation.schema_directives import Key
from strawberry.federation.types import FieldSet
from strawberry.utils.await_maybe import await_maybe

from resolvers.auth import Role, require
from resolvers.context import RequestContext
from resolvers.errors import ClientError, ErrorCode

Info = strawberry.Info[RequestContext, None]
EntityT = TypeVar("EntityT", bound=relay.Node)

# On each entity type: routers refer to it by its global id.
ENTITY_KEY = Key(fields=FieldSet("id"))


async def entity_by_reference(cls: type[EntityT], info: Info, id: str) -> EntityT | None:
    """`cls`'s `resolve_reference`: the object behind a representation's `id`."""
    require(info.context.principal, at_least=Role.VIEWER)
    try:
        global_id = relay.GlobalID.from_id(id)
    except ValueError:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT, f"{id} is not an id of this API", field="id"
        ) from None
    if global_id.type_name != cls.__strawberry_definition__.name:  # type: ignore[attr-defined]
        return None
    found = await await_maybe(cls.resolve_nodes(info=info, node_ids=[global_id.node_id]))
    node = next(iter(found), None)
    return node if isinstance(node, cls) else None


def checked_reference(representation: object, entities: Collection[str]) -> dict[str, Any]:
    """A representation as Strawberry's `_entities` resolver takes it: `__typename`
    naming an entity, and its key. Strawberry's fails with an internal error on
    anything else (a type that is not an entity, a missing key, a field its
    `resolve_reference` does not take), so those are the client's errors here.
    Fields beside the key are dropped: a router sends only the key."""
    if not isinstance(representation, dict) or not isinstance(
        typename := representation.get("__typename"), str
    ):
        raise ClientError(
            ErrorCode.BAD_USER_INPUT,
            "A representation is an object with __typename and id.",
            field="representations",
        )
    if typename not in entities:
        raise ClientError(
            ErrorCode.BAD_USER_INPUT,
            f"{typename[:100]} is not an entity of this API; the entities are"
            f" {', '.join(sorted(entities))}.",
            field="representations",
        )
    key = representation.get("id")
    if not isinstance(key, str):
        raise ClientError(
            ErrorCode.BAD_USER_INPUT,
            f"A representation of {typename} needs its key, id, as a string (a global id).",
            field="representations",
        )
    return {"__typename": typename, "id": key}
