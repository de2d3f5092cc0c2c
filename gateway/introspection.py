"""With introspection off (`POLYGRAPH_ENV=production`), the schema is not readable
through the API at all: neither `__schema`/`__type` nor federation's `_service { sdl }`,
which prints the same schema. Supergraphs are then composed from `polygraph schema
export`'s file."""

from __future__ import annotations

from typing import Any

from graphql import FieldNode, GraphQLError, ValidationRule
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.extensions import AddValidationRules


class NoServiceSdlRule(ValidationRule):
    def enter_field(self, node: FieldNode, *_args: Any) -> None:
        parent = self.context.get_parent_type()
        if node.name.value == "_service" and parent is self.context.schema.query_type:
            self.report_error(
                GraphQLError(
                    "GraphQL introspection has been disabled, and `_service` with it.",
                    node,
                )
            )


class DisableIntrospection(AddValidationRules):
    def __init__(self) -> None:
        super().__init__([NoSchemaIntrospectionCustomRule, NoServiceSdlRule])
