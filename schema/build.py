from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import strawberry
from graphql import GraphQLError
from strawberry.extensions import SchemaExtension
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext

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


class QuietSchema(strawberry.Schema):
    """Strawberry logs every error at ERROR with a traceback, expected ones included (a
    bad cursor, a missing sign-in). Errors are logged where they get their code
    instead (`gateway.errors.ErrorCodes`), at the level each deserves."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        pass


def build_schema(
    extensions: Sequence[type[SchemaExtension] | Callable[[], SchemaExtension]] = (),
) -> strawberry.Schema:
    """The one schema. Extensions are classes or factories, so each request gets fresh
    instances."""
    return QuietSchema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=list(extensions)
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
