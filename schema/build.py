from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import strawberry
from strawberry.extensions import SchemaExtension

from schema.mutation import Mutation
from schema.query import Query
from schema.subscription import Subscription

SDL_PATH = Path(__file__).with_name("schema.graphql")


def build_schema(extensions: Sequence[type[SchemaExtension]] = ()) -> strawberry.Schema:
    """The one schema. Extensions are classes, so each request gets fresh instances."""
    return strawberry.Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=list(extensions)
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
