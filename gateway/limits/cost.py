"""The static cost model, after GitHub's (nodes estimated from `first`, multiplied
down the tree) and Shopify's (every object 1, scalars free, a weight for what is
dearer than a lookup, the requested cost refused above a maximum, the actual cost
reported after).

A field that returns objects costs, each time it runs, its weight plus the
objects it returns; its children run once per object. A field's size is:

- `first` or `last` (or its default; `DEFAULT_PAGE_SIZE` where there is none) for
  a list, or for a connection's `edges` and `nodes`;
- the length of its id lists where those decide it (`nodes(ids:)`, `metricSeries`);
- for a traversal `depth` hops out (`agentNeighbourhood`), `REACH_BRANCHING` to the
  power `depth`, capped at what the store returns at most, for its `nodes` and `edges`;
- otherwise an estimate (`LIST_SIZES`, the schema's own averages for introspection
  lists, or `DEFAULT_LIST_SIZE`); a single object is 1.

Scalars are free except `totalCount` (a COUNT). Introspection objects that are not
in a list (`type`, `ofType`) are views of the one in-memory schema and are free;
introspection lists count like any other, so a deep `fields { type { fields ...`
adds up. The plan is built once per document and operation; the requested cost is
evaluated with each request's variables, the actual cost walks the result.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLList,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    ListValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValueNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_composite_type,
    is_enum_type,
    is_input_object_type,
    is_interface_type,
    is_object_type,
)

from gateway.limits.fields import field_definition
from stores.graph.queries import MAX_NEIGHBOURHOOD_NODES
from stores.postgres.pagination import DEFAULT_PAGE_SIZE

DEFAULT_LIST_SIZE = 10
MUTATION_WEIGHT = 10
# Per call, on top of the objects returned: fields that do more than a lookup.
CALL_WEIGHTS: Mapping[str, int] = {
    # Search: a vector and text search in PostgreSQL (and an embedding of the text).
    "Query.searchKnowledge": 10,
    "Query.similarKnowledge": 10,
    "Agent.recall": 10,
    "Query.searchTasks": 10,
    "Query.similarTasks": 10,
    "CreateTaskPayload.possibleDuplicates": 10,
    # Who is online (Redis), then a page of agents (PostgreSQL).
    "Query.agentsOnline": 5,
    "Query.searchMessages": 10,
    # Paths: graph traversals in Neo4j.
    "Query.agentNeighbourhood": 10,
    "Query.shortestPath": 10,
    "Query.criticalPath": 10,
    "Query.taskDependents": 10,
    "Task.blockers": 10,
    # Series: aggregations over raw points or rollups.
    "Agent.metrics": 5,
    "Query.metricSeries": 5,
    "Query.metricsSummary": 5,
    # A live probe of every store.
    "Query.health": 10,
    "Subscription.healthUpdates": 10,
}
# Scalars that cost a query of their own, by field name.
LEAF_WEIGHTS: Mapping[str, int] = {"totalCount": 1}
# Lists without a size argument.
LIST_SIZES: Mapping[str, int] = {
    "MetricSeries.points": 100,
}
# Lists as long as the product of these arguments' lengths.
SIZE_ARGUMENTS: Mapping[str, tuple[str, ...]] = {
    "Query.nodes": ("ids",),
    "Query._entities": ("representations",),
    "Query.metricSeries": ("agents", "names"),
}
# Traversals whose `nodes` and `edges` grow with a hop count: each hop reaches about
# `REACH_BRANCHING` more agents per agent (an agent's collaborators, as estimated
# above), up to the store's cap. A flat estimate priced a five-hop neighbourhood of a
# thousand agents like a one-hop one; in A1 under bench/, Neo4j's CPU for two-hop
# neighbourhoods was the largest share of the machine the abusive client took.
REACH_ARGUMENTS: Mapping[str, tuple[str, int]] = {
    "Query.agentNeighbourhood": ("depth", MAX_NEIGHBOURHOOD_NODES + 1),
}
REACH_BRANCHING = DEFAULT_LIST_SIZE
_PAGE_ARGUMENTS = ("first", "last")
_PAGED_LISTS = frozenset({"edges", "nodes"})

Variables = Mapping[str, object]


@dataclass(frozen=True, slots=True)
class _Fixed:
    n: int

    def value(self, variables: Variables) -> int:
        return self.n


@dataclass(frozen=True, slots=True)
class _Page:
    """`first` or `last`, from a literal, a variable, or the argument's default."""

    literal: int | None
    variable: str | None
    default: int

    def value(self, variables: Variables) -> int:
        if self.variable is not None:
            given = variables.get(self.variable)
            if isinstance(given, int) and not isinstance(given, bool):
                return max(given, 0)
        return max(self.literal if self.literal is not None else self.default, 0)


@dataclass(frozen=True, slots=True)
class _Lengths:
    """The product of some list arguments' lengths (literal or variable)."""

    parts: tuple[tuple[int | None, str | None], ...]

    def value(self, variables: Variables) -> int:
        product = 1
        for literal, variable in self.parts:
            given = variables.get(variable) if variable is not None else None
            product *= len(given) if isinstance(given, list) else (literal or 0)
        return product


@dataclass(frozen=True, slots=True)
class _Reach:
    """`branching ** hops`, hops from a literal, a variable or the default, at most `cap`."""

    literal: int | None
    variable: str | None
    default: int
    cap: int

    def value(self, variables: Variables) -> int:
        hops = self.literal if self.literal is not None else self.default
        if self.variable is not None:
            given = variables.get(self.variable)
            if isinstance(given, int) and not isinstance(given, bool):
                hops = given
        reach = 1
        # Multiplied hop by hop, stopping at the cap: a huge `depth` costs no big power.
        for _ in range(max(hops, 0)):
            reach *= REACH_BRANCHING
            if reach >= self.cap:
                return self.cap
        return reach


_Size = _Fixed | _Page | _Lengths | _Reach


@dataclass(frozen=True, slots=True)
class _Node:
    key: str
    weight: int
    # None for a scalar; objects returned per run otherwise.
    size: _Size | None
    counts_objects: bool
    children: tuple[_Node, ...]


class CostPlan:
    """The cost tree of one operation."""

    __slots__ = ("_roots",)

    def __init__(self, roots: tuple[_Node, ...]) -> None:
        self._roots = roots

    @classmethod
    def of(
        cls,
        schema: GraphQLSchema,
        operation: OperationDefinitionNode,
        fragments: Mapping[str, FragmentDefinitionNode],
    ) -> CostPlan:
        builder = _Builder(schema, fragments, _introspection_sizes(schema))
        root = schema.get_root_type(operation.operation)
        assert root is not None
        return cls(builder.selection([(operation.selection_set, root)], page=None))

    def requested(self, variables: Variables | None) -> int:
        return _requested(self._roots, 1, variables or {})

    def actual(self, data: object) -> int:
        return _actual(self._roots, [data] if isinstance(data, dict) else [])


def _requested(nodes: Sequence[_Node], runs: int, variables: Variables) -> int:
    total = 0
    for node in nodes:
        total += runs * node.weight
        if node.size is None:
            continue
        objects = runs * node.size.value(variables)
        if node.counts_objects:
            total += objects
        if node.children and objects:
            total += _requested(node.children, objects, variables)
    return total


def _actual(nodes: Sequence[_Node], parents: list[object]) -> int:
    total = 0
    for node in nodes:
        total += len(parents) * node.weight
        if node.size is None:
            continue
        key = node.key
        if not node.children:
            # Nothing below to walk: the objects are only counted (most of a page).
            if node.counts_objects:
                total += _count(key, parents)
            continue
        objects: list[object] = []
        for parent in parents:
            value = parent.get(key) if type(parent) is dict else None
            if type(value) is list:
                if None in value:
                    objects.extend(item for item in value if item is not None)
                else:
                    objects.extend(value)
            elif value is not None:
                objects.append(value)
        if node.counts_objects:
            total += len(objects)
        if objects:
            total += _actual(node.children, objects)
    return total


def _count(key: str, parents: list[object]) -> int:
    """The objects (not nulls) the parents hold at `key`."""
    count = 0
    for parent in parents:
        value = parent.get(key) if type(parent) is dict else None
        if type(value) is list:
            count += len(value) - value.count(None)
        elif value is not None:
            count += 1
    return count


_Entry = tuple[FieldNode, GraphQLNamedType]


class _Builder:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        introspection_sizes: Mapping[str, int],
    ) -> None:
        self._schema = schema
        self._fragments = fragments
        self._introspection_sizes = introspection_sizes

    def selection(
        self, sets: Sequence[tuple[SelectionSetNode, GraphQLNamedType]], *, page: _Size | None
    ) -> tuple[_Node, ...]:
        """The fields of selection sets run on the same objects, merged by response key
        as execution merges them (a fragment spread twice runs once)."""
        by_key: dict[str, list[_Entry]] = {}
        for selection_set, parent in sets:
            self._collect(selection_set, parent, by_key, set())
        nodes = (self._node(entries, page) for entries in by_key.values())
        return tuple(node for node in nodes if node is not None)

    def _collect(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType,
        into: dict[str, list[_Entry]],
        spread: set[str],
    ) -> None:
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                key = selection.alias.value if selection.alias else selection.name.value
                into.setdefault(key, []).append((selection, parent))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                inner = self._schema.get_type(condition.name.value) if condition else parent
                self._collect(selection.selection_set, inner or parent, into, spread)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = self._fragments.get(name)
                if fragment is None or name in spread:
                    continue
                spread.add(name)
                inner = self._schema.get_type(fragment.type_condition.name.value)
                self._collect(fragment.selection_set, inner or parent, into, spread)

    def _node(self, entries: list[_Entry], page: _Size | None) -> _Node | None:
        node, parent = entries[0]
        name = node.name.value
        definition = field_definition(self._schema, parent, name)
        if definition is None:  # __typename
            return None
        key = node.alias.value if node.alias else name
        coordinate = f"{parent.name}.{name}"
        named = get_named_type(definition.type)
        if not is_composite_type(named):
            weight = LEAF_WEIGHTS.get(name, 0)
            return _Node(key, weight, None, False, ()) if weight else None
        is_list = isinstance(get_nullable_type(definition.type), GraphQLList)
        weight = CALL_WEIGHTS.get(coordinate, 0)
        if parent is self._schema.mutation_type:
            weight = max(weight, MUTATION_WEIGHT)
        own_page = _page(node, definition)
        child_page: _Size | None = None
        size: _Size
        if own_page is not None and _is_connection(named):
            size, child_page = _Fixed(1), own_page
        elif coordinate in REACH_ARGUMENTS:
            size, child_page = _Fixed(1), _reach(node, definition, *REACH_ARGUMENTS[coordinate])
        elif own_page is not None and is_list:
            size = own_page
        elif page is not None and is_list and name in _PAGED_LISTS:
            size = page
        elif coordinate in SIZE_ARGUMENTS:
            size = _lengths(node, SIZE_ARGUMENTS[coordinate])
        elif is_list:
            size = _Fixed(
                LIST_SIZES.get(coordinate)
                or self._introspection_sizes.get(coordinate)
                or DEFAULT_LIST_SIZE
            )
        else:
            size = _Fixed(1)
        introspective = name.startswith("__") or parent.name.startswith("__")
        children = self.selection(
            [(entry.selection_set, named) for entry, _ in entries if entry.selection_set],
            page=child_page,
        )
        return _Node(key, weight, size, is_list or not introspective, children)


def _page(node: FieldNode, definition: GraphQLField) -> _Page | None:
    given = {argument.name.value: argument.value for argument in node.arguments or ()}
    for name in _PAGE_ARGUMENTS:
        if name not in definition.args:
            continue
        value = given.get(name)
        if value is None:
            continue
        return _Page(*_literal_or_variable(value), default=DEFAULT_PAGE_SIZE)
    # Neither given: `first`'s default, or the store's page size.
    declared = definition.args.get("first")
    if declared is None:
        return None
    default = declared.default_value
    return _Page(None, None, default if isinstance(default, int) else DEFAULT_PAGE_SIZE)


def _reach(node: FieldNode, definition: GraphQLField, argument: str, cap: int) -> _Reach:
    given = {a.name.value: a.value for a in node.arguments or ()}.get(argument)
    literal, variable = _literal_or_variable(given) if given is not None else (None, None)
    declared = definition.args[argument].default_value
    return _Reach(literal, variable, declared if isinstance(declared, int) else 1, cap)


def _literal_or_variable(value: ValueNode) -> tuple[int | None, str | None]:
    if isinstance(value, IntValueNode):
        return int(value.value), None
    if isinstance(value, VariableNode):
        return None, value.name.value
    return None, None


def _lengths(node: FieldNode, names: tuple[str, ...]) -> _Lengths:
    given = {argument.name.value: argument.value for argument in node.arguments or ()}
    parts: list[tuple[int | None, str | None]] = []
    for name in names:
        value = given.get(name)
        if isinstance(value, ListValueNode):
            parts.append((len(value.values), None))
        elif isinstance(value, VariableNode):
            parts.append((None, value.name.value))
        else:
            parts.append((1, None))
    return _Lengths(tuple(parts))


def _is_connection(named: GraphQLNamedType) -> bool:
    return isinstance(named, GraphQLObjectType) and "edges" in named.fields


@lru_cache(maxsize=4)
def _introspection_sizes(schema: GraphQLSchema) -> Mapping[str, int]:
    """Introspection lists as long as this schema's averages (rounded up)."""
    types = list(schema.type_map.values())
    with_fields = [t for t in types if is_object_type(t) or is_interface_type(t)]
    inputs = [t for t in types if is_input_object_type(t)]
    enums = [t for t in types if is_enum_type(t)]

    def mean(values: list[int]) -> int:
        return max(1, math.ceil(statistics.mean(values))) if values else 1

    fields = [f for t in with_fields for f in t.fields.values()]
    return {
        "__Schema.types": len(types),
        "__Schema.directives": len(schema.directives),
        "__Type.fields": mean([len(t.fields) for t in with_fields]),
        "__Type.inputFields": mean([len(t.fields) for t in inputs]),
        "__Type.enumValues": mean([len(t.values) for t in enums]),
        "__Type.interfaces": mean([len(t.interfaces) for t in with_fields]),
        "__Type.possibleTypes": mean(
            [len(schema.get_possible_types(t)) for t in with_fields if is_interface_type(t)]
        ),
        "__Field.args": mean([len(f.args) for f in fields]),
        "__Directive.args": mean([len(d.args) for d in schema.directives]),
    }
