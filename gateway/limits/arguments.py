"""One rule for every list argument, checked after validation and before execution.

- `first` and `last`, wherever they appear: between 0 and `MAX_PAGE_SIZE`.
- A list of ids (`nodes(ids:)`, `metricSeries(agents:)`, filters' `agentIds`) or of
  entity representations (`_entities`): at most `MAX_PAGE_SIZE` items, since each is
  an object to fetch.
- Any other list, at any depth of an input: at most `max_list_length` items.

Literal arguments are checked once per document (`ArgumentRules.of`); arguments
given by variables on every request (`ArgumentRules.check`), from the variables'
declared types, so a list is caught whichever argument it ends up in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLID,
    GraphQLInputObjectType,
    GraphQLInputType,
    GraphQLList,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_input_type,
    type_from_ast,
)

from gateway.limits.fields import field_definition
from resolvers.errors import ErrorCode
from stores.postgres.pagination import MAX_PAGE_SIZE

PAGE_ARGUMENTS = frozenset({"first", "last"})
# Federation's `_entities(representations: [_Any!]!)`: each one an object to fetch.
ENTITY_REPRESENTATION = "_Any"


@dataclass(frozen=True, slots=True)
class _PageVariable:
    """A `first` or `last` given by a variable: checked when the variables arrive."""

    coordinate: str
    argument: str
    variable: str


def refusal(message: str, *, field: str) -> GraphQLError:
    return GraphQLError(
        message, extensions={"code": ErrorCode.BAD_USER_INPUT.value, "field": field}
    )


class ArgumentRules:
    """The rule applied to one operation of one document."""

    __slots__ = (
        "_defaults",
        "_list_variables",
        "_max_list_length",
        "_page_variables",
        "literal_error",
    )

    def __init__(
        self,
        literal_error: GraphQLError | None,
        page_variables: tuple[_PageVariable, ...],
        defaults: Mapping[str, int],
        list_variables: tuple[tuple[str, GraphQLInputType], ...],
        max_list_length: int,
    ) -> None:
        self.literal_error = literal_error
        self._page_variables = page_variables
        self._defaults = defaults
        self._list_variables = list_variables
        self._max_list_length = max_list_length

    @classmethod
    def of(
        cls,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
        *,
        max_list_length: int,
    ) -> ArgumentRules:
        """Walks a validated operation: its literal arguments and its variables."""
        walker = _Walker(schema, fragments, max_list_length)
        root = schema.get_root_type(operation.operation)
        errors = list(walker.selection_set(operation.selection_set, root))
        list_variables: list[tuple[str, GraphQLInputType]] = []
        defaults: dict[str, int] = {}
        for definition in operation.variable_definitions or ():
            name = definition.variable.name.value
            declared = type_from_ast(schema, definition.type)
            default = definition.default_value
            if isinstance(default, IntValueNode):
                defaults[name] = int(default.value)
            if is_input_type(declared) and _holds_lists(declared):
                list_variables.append((name, declared))
                if default is not None:
                    where = _Where(f"Variable ${name}", name)
                    errors.extend(_literal_list_errors(default, declared, where, max_list_length))
        return cls(
            errors[0] if errors else None,
            tuple(walker.page_variables),
            defaults,
            tuple(list_variables),
            max_list_length,
        )

    def check(self, variables: Mapping[str, object] | None) -> list[GraphQLError]:
        """The first breach of the rule, if any."""
        error = self._first_error(variables)
        return [] if error is None else [error]

    def _first_error(self, variables: Mapping[str, object] | None) -> GraphQLError | None:
        if self.literal_error is not None:
            return self.literal_error
        values = variables or {}
        for page in self._page_variables:
            size = values.get(page.variable, self._defaults.get(page.variable))
            if not isinstance(size, int) or isinstance(size, bool):
                continue  # absent, null, or left for graphql-core's coercion to refuse
            if error := _page_size_error(page.coordinate, page.argument, size):
                return error
        for name, declared in self._list_variables:
            if name in values:
                where = _Where(f"Variable ${name}", name)
                errors = _raw_list_errors(values[name], declared, where, self._max_list_length)
                if (found := next(errors, None)) is not None:
                    return found
        return None


def _page_size_error(coordinate: str, argument: str, size: int) -> GraphQLError | None:
    if 0 <= size <= MAX_PAGE_SIZE:
        return None
    return refusal(
        f"{coordinate}({argument}:) must be between 0 and {MAX_PAGE_SIZE}; got {size}.",
        field=argument,
    )


def _list_error(
    where: _Where, length: int, item_type: GraphQLNamedType, max_length: int
) -> GraphQLError | None:
    fetched = item_type is GraphQLID or item_type.name == ENTITY_REPRESENTATION
    limit = MAX_PAGE_SIZE if fetched else max_length
    if length <= limit:
        return None
    kind = "items" if not fetched else "ids" if item_type is GraphQLID else "representations"
    return refusal(f"{where.label} takes at most {limit} {kind}; got {length}.", field=where.field)


@dataclass(frozen=True, slots=True)
class _Where:
    """Where a list sits: `label` for the message, `field` (an input path) for the code."""

    label: str
    field: str

    def __truediv__(self, name: str) -> _Where:
        return _Where(f"{self.label}.{name}", f"{self.field}.{name}")


def _holds_lists(input_type: GraphQLInputType) -> bool:
    nullable = get_nullable_type(input_type)
    if isinstance(nullable, GraphQLList):
        return True
    if isinstance(nullable, GraphQLInputObjectType):
        return any(_holds_lists(field.type) for field in nullable.fields.values())
    return False


def _raw_list_errors(
    value: object, input_type: GraphQLInputType, where: _Where, max_length: int
) -> Iterator[GraphQLError]:
    """Lists too long in a variable's JSON value; values of the wrong shape are left
    to graphql-core's coercion, which refuses them with its own message."""
    nullable = get_nullable_type(input_type)
    if isinstance(nullable, GraphQLList):
        if not isinstance(value, list):
            return
        item_type = nullable.of_type
        if error := _list_error(where, len(value), get_named_type(item_type), max_length):
            yield error
            return
        for item in value:
            yield from _raw_list_errors(item, item_type, where, max_length)
    elif isinstance(nullable, GraphQLInputObjectType) and isinstance(value, dict):
        for name, field in nullable.fields.items():
            if name in value:
                yield from _raw_list_errors(value[name], field.type, where / name, max_length)


class _Walker:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        max_list_length: int,
    ) -> None:
        self._schema = schema
        self._fragments = fragments
        self._max_list_length = max_list_length
        self._visited: set[str] = set()
        self.page_variables: list[_PageVariable] = []

    def selection_set(
        self, selection_set: SelectionSetNode | None, parent: GraphQLNamedType | None
    ) -> Iterator[GraphQLError]:
        for selection in selection_set.selections if selection_set else ():
            if isinstance(selection, FieldNode):
                yield from self._field(selection, parent)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self._schema.get_type(condition.name.value) if condition else parent
                yield from self.selection_set(selection.selection_set, inner)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self._fragments.get(name)
                # A fragment's arguments are the same wherever it is spread.
                if fragment is None or name in self._visited:
                    continue
                self._visited.add(name)
                inner = self._schema.get_type(fragment.type_condition.name.value)
                yield from self.selection_set(fragment.selection_set, inner)

    def _field(self, node: FieldNode, parent: GraphQLNamedType | None) -> Iterator[GraphQLError]:
        definition = field_definition(self._schema, parent, node.name.value)
        if definition is None:
            return
        coordinate = f"{getattr(parent, 'name', '?')}.{node.name.value}"
        for argument in node.arguments or ():
            name = argument.name.value
            declared = definition.args.get(name)
            if declared is None:
                continue
            if name in PAGE_ARGUMENTS:
                yield from self._page_size(coordinate, name, argument.value)
            where = _Where(f"{coordinate}({name}:)", name)
            yield from _literal_list_errors(
                argument.value, declared.type, where, self._max_list_length
            )
        yield from self.selection_set(node.selection_set, get_named_type(definition.type))

    def _page_size(
        self, coordinate: str, argument: str, value: ValueNode
    ) -> Iterator[GraphQLError]:
        if isinstance(value, IntValueNode):
            if error := _page_size_error(coordinate, argument, int(value.value)):
                yield error
        elif isinstance(value, VariableNode):
            self.page_variables.append(_PageVariable(coordinate, argument, value.name.value))


def _literal_list_errors(
    value: ValueNode, input_type: GraphQLInputType, where: _Where, max_length: int
) -> Iterator[GraphQLError]:
    nullable = get_nullable_type(input_type)
    if isinstance(nullable, GraphQLList):
        if not isinstance(value, ListValueNode):
            return
        item_type = nullable.of_type
        if error := _list_error(where, len(value.values), get_named_type(item_type), max_length):
            yield error
            return
        for item in value.values:
            yield from _literal_list_errors(item, item_type, where, max_length)
    elif isinstance(nullable, GraphQLInputObjectType) and isinstance(value, ObjectValueNode):
        for field in value.fields:
            declared = nullable.fields.get(field.name.value)
            if declared is not None:
                yield from _literal_list_errors(
                    field.value, declared.type, where / field.name.value, max_length
                )
