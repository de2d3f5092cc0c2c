"""Execution plans: what a validated operation asks of each type, worked out once.

graphql-core works out, for every object it completes, which fields apply, their
definitions, resolvers and return types, and walks each value's type wrappers
again; graphql-jit showed for graphql-js that all of that depends on the document
only. A plan holds it per operation (and per value of the variables its @skip and
@include read) and is reused by every later request with the same document:

- `ObjectPlan`: the fields one object type completes for one selection, in
  response order, each a `FieldPlan`.
- `FieldPlan.mode`: how the value is obtained. `LEAF` and `ATTRIBUTE` are fields
  whose resolver is exactly Strawberry's basic-field resolver (no resolver
  function, no field extensions such as permission classes, no exception
  handlers): their value is the attribute, read directly. `TYPENAME` is
  `__typename`. Every other field is `RESOLVE`: its own resolver is called as
  graphql-core calls it.
- `Shape`: the return type with its wrappers unfolded once (non-null, list, leaf
  serializer, object or abstract type); object sub-plans are built when first met.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from types import CodeType
from typing import TYPE_CHECKING, Any, Literal

from graphql import (
    FieldNode,
    GraphQLAbstractType,
    GraphQLError,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLOutputType,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    is_abstract_type,
    is_leaf_type,
    is_non_null_type,
)
from graphql.execution.collect_fields import (
    FieldDetails,
    collect_fields,
    collect_subfields,
)
from graphql.execution.executor import SELECTIONS_NESTED_TOO_DEEPLY
from graphql.execution.values import coerce_argument, get_argument_values
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.base import StrawberryObjectDefinition, get_object_definition
from strawberry.types.cast import TYPE_CAST_ATTRIBUTE
from strawberry.types.field import StrawberryField

from gateway.engine.leaves import Serializer, serializer
from gateway.engine.resolvers import DirectResolver, direct_resolver
from schema.selection import has_variable, reads_variables
from stores.cache.lru import Lru

if TYPE_CHECKING:
    from graphql.execution import Executor

    from gateway.engine.compile import CompiledObject
    from gateway.engine.items import ItemsCompletion

    AnyExecutor = Executor[Any]

LEAF, ATTRIBUTE, TYPENAME, RESOLVE = range(4)
LEAF_SHAPE, OBJECT_SHAPE, ABSTRACT_SHAPE, LIST_SHAPE = range(4)

_DEFINITION = GraphQLCoreConverter.DEFINITION_BACKREF


def _nested_code(code: CodeType, name: str) -> Iterator[CodeType]:
    for constant in code.co_consts:
        if isinstance(constant, CodeType):
            if constant.co_name == name:
                yield constant
            yield from _nested_code(constant, name)


# Strawberry's resolver for basic fields (`from_resolver`'s `_get_basic_result`): it
# reads the attribute and nothing else. Only fields with exactly this resolver are
# read directly; should Strawberry change, nothing is, and every field is resolved.
_BASIC_RESOLVER_CODES = frozenset(
    _nested_code(GraphQLCoreConverter.from_resolver.__code__, "_get_basic_result")
)
# Strawberry's generated `is_type_of` checks ignore the resolve info.
_STRAWBERRY_IS_TYPE_OF_CODES = frozenset(
    code
    for method in (GraphQLCoreConverter.from_object, GraphQLCoreConverter._get_is_type_of)
    for code in _nested_code(method.__code__, "is_type_of")
)
# Where `strawberry.cast` marks an object (its `is_type_of` then answers by the mark).
CAST_ATTRIBUTE = TYPE_CAST_ATTRIBUTE
# Strawberry's type resolver for an interface without a `resolve_type` of its own.
_STRAWBERRY_INTERFACE_RESOLVER_CODES = frozenset(
    _nested_code(GraphQLCoreConverter.from_interface.__code__, "resolve_type")
)


def basic_attribute(field_def: GraphQLField) -> str | None:
    """The attribute a field reads, when its resolver is Strawberry's basic one."""
    resolve = field_def.resolve
    code = getattr(resolve, "__code__", None)
    if code is None or code not in _BASIC_RESOLVER_CODES:
        return None
    definition = (field_def.extensions or {}).get(_DEFINITION)
    if not isinstance(definition, StrawberryField) or not definition.is_basic_field:
        return None
    # The basic resolver calls `get_result`, which calls `default_resolver`: both
    # must be the stock ones for a plain attribute read to be the same thing.
    if type(definition).get_result is not StrawberryField.get_result:
        return None
    if definition.default_resolver is not getattr:
        return None
    return definition.python_name


def _needs_info(is_type_of: Callable[..., Any] | None) -> bool:
    code = getattr(is_type_of, "__code__", None)
    return is_type_of is not None and code not in _STRAWBERRY_IS_TYPE_OF_CODES


class ObjectPlan:
    """The fields of one object type for one selection, in response order; `complete`
    is them compiled to one function (gateway/engine/compile.py), made on first use."""

    __slots__ = (
        "_complete",
        "_items",
        "accepted",
        "fields",
        "is_type_of",
        "is_type_of_needs_info",
        "object_type",
        "row_completers",
    )

    def __init__(self, object_type: GraphQLObjectType, fields: list[FieldPlan]) -> None:
        self.object_type = object_type
        self.fields = fields
        self.is_type_of = object_type.is_type_of
        self.is_type_of_needs_info = _needs_info(object_type.is_type_of)
        # Classes Strawberry's `is_type_of` accepted an object of. Its answer for an
        # object not cast with `strawberry.cast` depends on the object's class alone
        # (`isinstance`, the class's definition), so another object of such a class
        # needs no call (see `accepts`). None: another `is_type_of`, always called.
        self.accepted: set[type] | None = (
            set() if object_type.is_type_of is not None and not self.is_type_of_needs_info else None
        )
        self._complete: CompiledObject | None = None
        # A list of this plan's objects as one loop (gateway/engine/items.py); False:
        # the selection is not one it completes.
        self._items: ItemsCompletion | Literal[False] | None = None
        # This plan compiled over rows, per reader (gateway/engine/rows.py; None: not).
        self.row_completers: dict[Any, Any] = {}

    def compiled(self, executor: AnyExecutor) -> CompiledObject:
        """This plan as one function, compiled at its first use (by `executor`, whose
        plans of the fields below it the function may inline)."""
        complete = self._complete
        if complete is None:
            from gateway.engine.compile import compile_object

            complete = self._complete = compile_object(self, executor)
        return complete

    def compiled_items(self, executor: AnyExecutor) -> ItemsCompletion | None:
        """A list of this plan's objects completed by one loop, compiled at its first
        use; None when the plan is not one the loop completes."""
        items = self._items
        if items is None:
            from gateway.engine.items import compile_items

            items = self._items = compile_items(self, executor) or False
        return items or None


class Shape:
    """A return type with its wrappers unfolded: what completing a value takes."""

    __slots__ = ("graphql_type", "kind", "needs_info", "non_null")

    def __init__(self, graphql_type: GraphQLOutputType, kind: int, non_null: bool) -> None:
        self.graphql_type = graphql_type
        self.kind = kind
        self.non_null = non_null
        # Completing this shape (not its sub-plans) reads the resolve info.
        self.needs_info = False


class LeafShape(Shape):
    __slots__ = ("serialize",)

    def __init__(self, graphql_type: GraphQLOutputType, non_null: bool, serialize: Serializer):
        super().__init__(graphql_type, LEAF_SHAPE, non_null)
        self.serialize = serialize


class ListShape(Shape):
    __slots__ = ("item", "list_type")

    def __init__(
        self,
        graphql_type: GraphQLOutputType,
        non_null: bool,
        list_type: GraphQLList[Any],
        item: Shape,
    ) -> None:
        super().__init__(graphql_type, LIST_SHAPE, non_null)
        self.list_type = list_type
        self.item = item
        self.needs_info = item.needs_info


class ObjectShape(Shape):
    __slots__ = ("_plan", "details", "object_type")

    def __init__(
        self,
        graphql_type: GraphQLOutputType,
        non_null: bool,
        object_type: GraphQLObjectType,
        details: list[FieldDetails],
    ) -> None:
        super().__init__(graphql_type, OBJECT_SHAPE, non_null)
        self.object_type = object_type
        self.details = details
        self._plan: ObjectPlan | None = None
        self.needs_info = _needs_info(object_type.is_type_of)

    def plan(self, executor: AnyExecutor) -> ObjectPlan:
        plan = self._plan
        if plan is None:
            plan = self._plan = object_plan(executor, self.object_type, self.details)
        return plan


class AbstractShape(Shape):
    __slots__ = ("abstract_type", "by_class", "details", "plans")

    def __init__(
        self,
        graphql_type: GraphQLOutputType,
        non_null: bool,
        abstract_type: GraphQLAbstractType,
        details: list[FieldDetails],
    ) -> None:
        super().__init__(graphql_type, ABSTRACT_SHAPE, non_null)
        self.abstract_type = abstract_type
        self.details = details
        self.plans: dict[GraphQLObjectType, ObjectPlan] = {}
        self.needs_info = True
        # Runtime types by the class of the object, for an interface Strawberry resolves
        # by the object's class (see `remember_runtime_type`): the next object of a class
        # is completed without calling the resolver. None: it is called every time.
        code = getattr(abstract_type.resolve_type, "__code__", None)
        self.by_class: dict[type, GraphQLObjectType] | None = (
            {} if code in _STRAWBERRY_INTERFACE_RESOLVER_CODES else None
        )

    def remember_runtime_type(self, value: Any, runtime_type: GraphQLObjectType) -> None:
        """Keep `runtime_type` for `value`'s class when Strawberry's resolver chose it by
        that class alone: an instance of the interface's class, not cast with
        `strawberry.cast`, of a type that is not generic and whose `is_type_of` needs no
        info. Any other object of that class, not cast, resolves to the same type."""
        if self.by_class is None or hasattr(value, CAST_ATTRIBUTE):
            return
        interface = (self.abstract_type.extensions or {}).get(_DEFINITION)
        definition = get_object_definition(type(value))
        if (
            isinstance(interface, StrawberryObjectDefinition)
            and isinstance(value, interface.origin)
            and definition is not None
            and not definition.is_graphql_generic
            and definition.name == runtime_type.name
            and not _needs_info(runtime_type.is_type_of)
        ):
            self.by_class[type(value)] = runtime_type

    def plan(self, executor: AnyExecutor, runtime_type: GraphQLObjectType) -> ObjectPlan:
        plan = self.plans.get(runtime_type)
        if plan is None:
            plan = self.plans[runtime_type] = object_plan(executor, runtime_type, self.details)
        return plan


def shape_of(graphql_type: GraphQLOutputType, details: list[FieldDetails]) -> Shape:
    non_null = isinstance(graphql_type, GraphQLNonNull)
    inner = graphql_type.of_type if non_null else graphql_type  # type: ignore[union-attr]
    if isinstance(inner, GraphQLList):
        return ListShape(graphql_type, non_null, inner, shape_of(inner.of_type, details))
    if is_leaf_type(inner):
        return LeafShape(graphql_type, non_null, serializer(inner))
    if isinstance(inner, GraphQLObjectType):
        return ObjectShape(graphql_type, non_null, inner, details)
    if is_abstract_type(inner):
        return AbstractShape(graphql_type, non_null, inner, details)
    msg = f"Cannot complete value of unexpected output type: '{inner}'."
    raise TypeError(msg)  # pragma: no cover


class FieldPlan:
    """One response key of an object: its definition, how to get and complete it."""

    __slots__ = (
        "args",
        "attribute",
        "converted",
        "details",
        "direct",
        "field_def",
        "key",
        "mode",
        "name",
        "node",
        "nodes",
        "non_null",
        "null_message",
        "parent_name",
        "parent_type",
        "resolve",
        "return_type",
        "serialize",
        "shape",
        "split_args",
    )

    def __init__(
        self,
        parent_type: GraphQLObjectType,
        key: str,
        details: list[FieldDetails],
        field_def: GraphQLField,
        *,
        direct: bool,
    ) -> None:
        self.parent_type = parent_type
        self.parent_name = parent_type.name
        self.key = key
        self.details = details
        self.node: FieldNode = details[0].node
        self.nodes = [detail.node for detail in details]
        self.name = self.node.name.value
        self.field_def = field_def
        self.return_type = field_def.type
        self.shape = shape_of(field_def.type, details)
        self.non_null = self.shape.non_null
        self.null_message = (
            f"Cannot return null for non-nullable field {parent_type.name}.{self.name}."
        )
        self.resolve = field_def.resolve
        self.attribute = basic_attribute(field_def) if direct else None
        self.serialize: Serializer | None = None
        self.direct: DirectResolver | None = None
        # Arguments without variables are the same for every request: coerced once.
        self.args: dict[str, Any] | None = None
        # And converted once, for a direct resolver, when they convert to immutable
        # values (set by the executor at the first request).
        self.converted: dict[str, Any] | None = None
        # Arguments some of which are variables as they are (`agents: $agents`): the
        # others coerced once, the variables' values taken per request (`split_arguments`).
        self.split_args: SplitArguments | None = None
        if self.name == "__typename":
            self.mode = TYPENAME
        elif self.attribute is not None:
            if isinstance(self.shape, LeafShape):
                self.mode = LEAF
                self.serialize = self.shape.serialize
            else:
                self.mode = ATTRIBUTE
        else:
            self.mode = RESOLVE
            # Without resolver middleware, a resolver function can be called directly.
            self.direct = direct_resolver(field_def) if direct else None
            if not field_def.args and not self.node.arguments:
                self.args = {}
            elif not reads_variables(self.node):
                try:
                    self.args = get_argument_values(field_def, self.node)
                except GraphQLError:
                    self.args = None  # raised again, per field, at execution
            else:
                self.split_args = split_arguments(field_def, self.node)


# A field's arguments in definition order: (name in the arguments dict, its coerced
# value or the name of the variable that gives it, whether the argument is non-null).
SplitArguments = tuple[tuple[str, Any, bool | None], ...]


def split_arguments(field_def: GraphQLField, node: FieldNode) -> SplitArguments | None:
    """The field's arguments, those that are a variable as they are kept as its name
    (a third item that says if the argument is non-null), the others coerced now as
    graphql-core's `get_argument_values` coerces them (a third item None). None when a
    variable sits inside a literal (`[$a]`) or a literal does not coerce: the executor
    then coerces the whole field per request, and raises what it meets."""
    argument_nodes = {argument.name.value: argument for argument in node.arguments or ()}
    split: list[tuple[str, Any, bool | None]] = []
    for name, argument in field_def.args.items():
        argument_node = argument_nodes.get(name)
        value_node = None if argument_node is None else argument_node.value
        out_name = argument.out_name or name
        if isinstance(value_node, VariableNode):
            split.append((out_name, value_node.name.value, is_non_null_type(argument.type)))
            continue
        if value_node is not None and has_variable(value_node):
            return None
        coerced: dict[str, Any] = {}
        try:
            coerce_argument(coerced, node, name, argument, argument_node, None, None)
        except GraphQLError:
            return None
        if out_name in coerced:  # left out: no value and no default
            split.append((out_name, coerced[out_name], None))
    return tuple(split)


def object_plan(
    executor: AnyExecutor, object_type: GraphQLObjectType, details: list[FieldDetails]
) -> ObjectPlan:
    grouped = collect_subfields(
        executor.schema,
        executor.fragments,
        executor.variable_values,
        executor.operation,
        object_type,
        details,
        executor.hide_suggestions,
    ).grouped_field_set
    return _plan_fields(executor, object_type, grouped)


def _plan_fields(
    executor: AnyExecutor, object_type: GraphQLObjectType, grouped: dict[str, list[FieldDetails]]
) -> ObjectPlan:
    # With resolver middleware (an extension's `resolve` hook) every field goes through
    # its resolver, as in graphql-core, so the middleware sees each one.
    direct = not _has_middleware(executor)
    fields = []
    schema = executor.schema
    for key, details in grouped.items():
        field_def = schema.get_field(object_type, details[0].node.name.value)
        if field_def is not None:
            fields.append(FieldPlan(object_type, key, details, field_def, direct=direct))
    return ObjectPlan(object_type, fields)


def _has_middleware(executor: AnyExecutor) -> bool:
    manager = executor.middleware_manager
    return manager is not None and bool(manager._middleware_resolvers)


class OperationPlan:
    """The root fields of one operation, for one value of its directive variables."""

    __slots__ = ("root",)

    def __init__(self, root: ObjectPlan) -> None:
        self.root = root


def operation_plan(executor: AnyExecutor) -> OperationPlan:
    operation = executor.operation
    schema = executor.schema
    root_type = schema.get_root_type(operation.operation)
    if root_type is None:
        msg = f"Schema is not configured to execute {operation.operation.value} operation."
        raise GraphQLError(msg, operation)
    try:
        grouped = collect_fields(
            schema,
            executor.fragments,
            executor.variable_values,
            root_type,
            operation,
            executor.hide_suggestions,
        ).grouped_field_set
    except RecursionError:
        grouped = None
    if grouped is None:
        raise GraphQLError(SELECTIONS_NESTED_TOO_DEEPLY, operation)
    return OperationPlan(_plan_fields(executor, root_type, grouped))


class _OperationEntry:
    __slots__ = ("directive_variables", "operation", "plans")

    def __init__(
        self,
        operation: weakref.ref[OperationDefinitionNode],
        directive_variables: tuple[str, ...],
    ):
        self.operation = operation
        self.directive_variables = directive_variables
        self.plans: dict[tuple[Any, ...], OperationPlan] = {}


class PlanCache:
    """Plans by operation, least recently used out first.

    Keyed by the operation's AST node: the parse cache (gateway/parsing.py) hands every
    request with the same text the same document, so identity finds the plan. The
    entry holds the node weakly and goes with it: the caches that keep documents
    bound them in tokens (`CACHED_TOKENS`), and a thousand plans holding their
    documents could have kept a gigabyte. A node's id cannot be reused before its
    entry is gone.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        self._entries: Lru[int, _OperationEntry] = Lru(maxsize)

    def __len__(self) -> int:
        return len(self._entries)

    def plan(self, executor: AnyExecutor) -> OperationPlan:
        operation = executor.operation
        entries = self._entries
        node_id = id(operation)
        entry = entries.get(node_id)
        if entry is None or entry.operation() is not operation:

            def forget(_: weakref.ref[OperationDefinitionNode]) -> None:
                entries.pop(node_id)

            entry = _OperationEntry(weakref.ref(operation, forget), _directive_variables(executor))
            entries.put(node_id, entry)
        coerced = executor.variable_values.coerced
        key = (
            tuple(coerced.get(name) for name in entry.directive_variables),
            _has_middleware(executor),
        )
        plan = entry.plans.get(key)
        if plan is None:
            plan = entry.plans[key] = operation_plan(executor)
        return plan


def _directive_variables(executor: AnyExecutor) -> tuple[str, ...]:
    """Variables read by @skip and @include anywhere the operation can reach."""
    names: dict[str, None] = {}
    pending: list[SelectionSetNode] = [executor.operation.selection_set]
    pending.extend(f.selection_set for f in executor.fragment_definitions.values())
    while pending:
        for selection in pending.pop().selections:
            for directive in selection.directives or ():
                if directive.name.value in ("skip", "include"):
                    for argument in directive.arguments or ():
                        if isinstance(argument.value, VariableNode):
                            names[argument.value.name.value] = None
            selection_set = getattr(selection, "selection_set", None)
            if selection_set is not None:
                pending.append(selection_set)
    return tuple(names)
