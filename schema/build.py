from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import strawberry
from graphql import (
    GraphQLArgument,
    GraphQLDefaultInput,
    GraphQLError,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLInterfaceType,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLSchema,
    GraphQLUnionType,
    get_nullable_type,
)
from graphql.execution import Executor as GraphQLExecutionContext
from strawberry.extensions import SchemaExtension
from strawberry.extensions.runner import SchemaExtensionsRunner
from strawberry.federation.schema import FederationAny
from strawberry.scalars import JSON as StrawberryJSON
from strawberry.tools import merge_types
from strawberry.types import ExecutionContext, Info

from resolvers.errors import ClientError
from schema.agent_grants import AgentGrantQueries
from schema.cached import add_directives
from schema.claims import ClaimSubscriptions
from schema.conversation_roots import ConversationQueries, ConversationSubscriptions
from schema.event_sinks import EventSinkQueries
from schema.extension_runner import CachedHooksRunner
from schema.federation import checked_reference
from schema.metrics import MetricQueries, MetricSubscriptions
from schema.mutation import MUTATIONS
from schema.presence import PresenceQueries, PresenceSubscriptions
from schema.query import Query as CoreQuery
from schema.scalars import DATETIME, JSON_SCALAR
from schema.search import SearchQuery
from schema.subscription import Subscription as CoreSubscription
from schema.task_search import TaskSearchQuery

# One root type per domain module, merged here: a new domain adds its class to a tuple.
QUERIES: tuple[type, ...] = (
    CoreQuery,
    MetricQueries,
    SearchQuery,
    AgentGrantQueries,
    EventSinkQueries,
    TaskSearchQuery,
    PresenceQueries,
    ConversationQueries,
)
SUBSCRIPTIONS: tuple[type, ...] = (
    CoreSubscription,
    MetricSubscriptions,
    ClaimSubscriptions,
    PresenceSubscriptions,
    ConversationSubscriptions,
)

Query = merge_types("Query", QUERIES)
Mutation = merge_types("Mutation", MUTATIONS)
Subscription = merge_types("Subscription", SUBSCRIPTIONS)

SDL_PATH = Path(__file__).with_name("schema.graphql")


class QuietSchema(strawberry.federation.Schema):
    """A federation v2 subgraph schema (schema/federation.py) that leaves logging to the
    gateway: Strawberry logs every error at ERROR with a traceback, expected ones
    included (a bad cursor, a missing sign-in). Errors are logged where they get their
    code instead (`gateway.errors.ErrorCodes`), at the level each deserves."""

    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        pass

    def create_extensions_runner(
        self, execution_context: ExecutionContext, extensions: list[SchemaExtension]
    ) -> SchemaExtensionsRunner:
        # Hooks looked up once per extension class, not on every request.
        return CachedHooksRunner(execution_context=execution_context, extensions=extensions)

    @cached_property
    def _entity_names(self) -> frozenset[str]:
        entity = self._schema.get_type("_Entity")
        assert isinstance(entity, GraphQLUnionType)
        return frozenset(member.name for member in entity.types)

    async def entities_resolver(  # type: ignore[override]
        self, info: Info, representations: list[FederationAny]
    ) -> list[FederationAny]:
        # An ill-formed representation is its item's error; Strawberry's resolver sees
        # checked copies (it takes `__typename` out in place: a representation given
        # as a variable stays as the client sent it).
        references: list[Any] = []
        well_formed: list[tuple[int, FederationAny]] = []
        for i, representation in enumerate(representations):
            try:
                checked = checked_reference(representation, self._entity_names)
            except ClientError as refusal:
                references.append(refusal)
            else:
                references.append(None)
                well_formed.append((i, FederationAny(checked)))
        resolved = super().entities_resolver(info, [copy for _, copy in well_formed])
        for (i, _), item in zip(well_formed, resolved, strict=True):
            references[i] = item
        # Its items are coroutines: awaited together, one loader batch serves them all,
        # and the list holds values (or errors, each reported at its index) by the end.
        pending = [(i, item) for i, item in enumerate(references) if inspect.isawaitable(item)]
        settled = await asyncio.gather(*(item for _, item in pending), return_exceptions=True)
        for (i, _), value in zip(pending, settled, strict=True):
            references[i] = FederationAny(value)
        return references


def build_schema(
    extensions: Sequence[type[SchemaExtension] | Callable[[], SchemaExtension]] = (),
    *,
    execution_context_class: type[GraphQLExecutionContext[Any]] | None = None,
) -> strawberry.Schema:
    """The one schema. Extensions are classes or factories, so each request gets fresh
    instances; `execution_context_class` replaces graphql-core's executor (None:
    Strawberry's)."""
    schema = QuietSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=list(extensions),
        execution_context_class=execution_context_class,
        scalar_overrides={datetime: DATETIME, StrawberryJSON: JSON_SCALAR},
    )
    _introspectable_defaults(schema._schema)
    add_directives(schema._schema)
    return schema


def _introspectable_defaults(schema: GraphQLSchema) -> None:
    """Give JSON defaults (`payload: JSON! = {}`) a literal that introspection can print.

    Strawberry hands graphql-core such defaults as Python values, which its
    introspection turns into literals with `ast_from_value`; that fails on a dict
    ("Cannot convert value to AST"), so every introspection (GraphiQL, codegen)
    answered errors. Introspection prefers `default`, a `GraphQLDefaultInput` that
    converts the value with `value_to_literal`, which handles objects and lists;
    Strawberry's SDL printer still reads `default_value`.
    """
    for named in schema.type_map.values():
        inputs: list[GraphQLArgument | GraphQLInputField] = []
        if isinstance(named, GraphQLInputObjectType):
            inputs.extend(named.fields.values())
        elif isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            inputs.extend(arg for field in named.fields.values() for arg in field.args.values())
        for item in inputs:
            if isinstance(item.default_value, dict | list) and isinstance(
                get_nullable_type(item.type), GraphQLScalarType
            ):
                item.default = GraphQLDefaultInput(value=item.default_value)


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
