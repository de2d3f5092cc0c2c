from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import strawberry
from graphql.execution import Executor as GraphQLExecutionContext
from strawberry.extensions import SchemaExtension
from strawberry.tools import merge_types

from schema.metrics import MetricQueries, MetricSubscriptions
from schema.mutation import MUTATIONS
from schema.query import Query as CoreQuery
from schema.search import SearchQuery
from schema.subscription import Subscription as CoreSubscription

# One root type per domain module, merged here: a new domain adds its class to a tuple.
QUERIES: tuple[type, ...] = (CoreQuery, MetricQueries, SearchQuery)
SUBSCRIPTIONS: tuple[type, ...] = (CoreSubscription, MetricSubscriptions)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)
Subscription = merge_types("Subscription", SUBSCRIPTIONS)

SDL_PATH = Path(__file__).with_name("schema.graphql")


def build_schema(
    extensions: Sequence[type[SchemaExtension]] = (),
    *,
    execution_context_class: type[GraphQLExecutionContext[Any]] | None = None,
) -> strawberry.Schema:
    """The one schema. Extensions are classes, so each request gets fresh instances;
    `execution_context_class` replaces graphql-core's executor (None: Strawberry's)."""
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=list(extensions),
        execution_context_class=execution_context_class,
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
