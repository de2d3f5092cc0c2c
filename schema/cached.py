"""`@cached`: a query asks for its whole result to be kept (gateway.query_cache)."""

from __future__ import annotations

from graphql import (
    DirectiveLocation,
    GraphQLArgument,
    GraphQLDirective,
    GraphQLInt,
    GraphQLSchema,
)

CACHED = GraphQLDirective(
    name="cached",
    locations=[DirectiveLocation.QUERY],
    args={
        "ttl": GraphQLArgument(
            GraphQLInt,
            description=(
                "Seconds the result may be served again; at most, and by default,"
                " POLYGRAPH_CACHE_QUERY_TTL_S"
            ),
        )
    },
    description=(
        "Serve this query's result from the cache when the same caller (user, role,"
        " scopes and bound agent) asked the same document with the same variables"
        " before, and nothing it read has changed since. Kept only when every read was"
        " of agents, tasks, workflows, users or closed metric windows by id; the"
        " response's `extensions.cache` says what happened."
    ),
)


def add_directives(schema: GraphQLSchema) -> None:
    # Declared on graphql-core's schema rather than through Strawberry's `directives`,
    # which would wrap every resolver in a middleware to run field directives.
    schema.directives = (*schema.directives, CACHED)
