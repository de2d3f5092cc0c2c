from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import strawberry
from strawberry.extensions import SchemaExtension
from strawberry.tools import merge_types

from schema.agent_grants import AgentGrantQueries
from schema.metrics import MetricQueries, MetricSubscriptions
from schema.mutation import MUTATIONS
from schema.query import Query as CoreQuery
from schema.search import SearchQuery
from schema.subscription import Subscription as CoreSubscription

# One root type per domain module, merged here: a new domain adds its class to a tuple.
QUERIES: tuple[type, ...] = (CoreQuery, MetricQueries, SearchQuery, AgentGrantQueries)
SUBSCRIPTIONS: tuple[type, ...] = (CoreSubscription, MetricSubscriptions)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)
Subscription = merge_types("Subscription", SUBSCRIPTIONS)

SDL_PATH = Path(__file__).with_name("schema.graphql")


def build_schema(extensions: Sequence[type[SchemaExtension]] = ()) -> strawberry.Schema:
    """The one schema. Extensions are classes, so each request gets fresh instances."""
    return strawberry.Schema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=list(extensions)
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
