"""The planned executor answers exactly as graphql-core's, on a schema built for it.

Each case runs one document on two copies of the same inline Strawberry schema, one
with the planned executor and one with graphql-core's own, and compares `data` and
the formatted errors (message, locations, path, extensions) in order.
"""

from __future__ import annotations

import asyncio
import gc
import math
from collections.abc import AsyncGenerator, Iterator
from enum import Enum
from typing import Annotated, Any

import pytest
import strawberry
from graphql import GraphQLObjectType, get_introspection_query, parse
from graphql.execution import Executor
from strawberry.extensions import ParserCache, SchemaExtension
from strawberry.permission import BasePermission
from strawberry.types import ExecutionResult

from gateway.engine import PlannedExecutionContext, planned_execution_context
from gateway.engine.plan import LEAF, RESOLVE, ObjectShape, OperationPlan
from gateway.engine.resolvers import DirectResolver, direct_resolver
from tests.support.executors import recording_executor


@strawberry.enum
class Colour(Enum):
    RED = "red"
    GREEN = "green"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Leaf(Named):
    value: int | None
    must: int
    colour: Colour | None = None


@strawberry.type
class Other(Named):
    size: float


Either = Annotated[Leaf | Other, strawberry.union("Either")]


class Denied(BasePermission):
    message = "not for you"

    def has_permission(self, source: Any, info: strawberry.Info, **kwargs: Any) -> bool:
        return False


@strawberry.type
class Branch:
    label: str
    leaves: list[Leaf]
    maybe_leaves: list[Leaf | None] | None
    tags: list[str]
    scores: list[float | None]
    guarded: str = strawberry.field(default="secret", permission_classes=[Denied])

    @strawberry.field
    async def children(self, first: int = 2) -> list[Branch]:
        await asyncio.sleep(0)
        return [_branch(f"{self.label}.{i}") for i in range(first)]

    @strawberry.field
    async def optional_children(self, first: int = 2) -> list[Branch | None] | None:
        return [_branch(f"{self.label}.{i}") for i in range(first)]

    @strawberry.field
    async def failing(self) -> str | None:
        await asyncio.sleep(0)
        raise ValueError(f"failing under {self.label}")

    @strawberry.field
    async def failing_required(self) -> str:
        raise ValueError(f"required failure under {self.label}")

    @strawberry.field
    def sometimes(self, index: int) -> Leaf:
        if index % 2:
            raise ValueError(f"odd {index}")
        return Leaf(name=f"even {index}", value=index, must=index)

    @strawberry.field
    def returns_error(self) -> str | None:
        return ValueError("returned, not raised")  # type: ignore[return-value]

    @strawberry.field
    def things(self) -> list[Either]:
        return [
            Leaf(name="l", value=1, must=1, colour=Colour.GREEN),
            Other(name="o", size=2.5),
        ]

    @strawberry.field
    def named(self) -> list[Named]:
        return [Leaf(name="n", value=None, must=2), Other(name="m", size=0.5)]

    @strawberry.field
    def wrong_type(self) -> Leaf:
        return Other(name="x", size=1.0)  # type: ignore[return-value]

    @strawberry.field
    def cast_elsewhere(self) -> list[Leaf]:
        # A Leaf, then a Leaf marked as an Other: Strawberry's `is_type_of` refuses it.
        return [
            Leaf(name="plain", value=1, must=1),
            strawberry.cast(Other, Leaf(name="cast", value=2, must=2)),
        ]


def _branch(label: str) -> Branch:
    return Branch(
        label=label,
        leaves=[Leaf(name=f"{label}/{i}", value=i, must=i, colour=Colour.RED) for i in range(3)],
        maybe_leaves=[Leaf(name="a", value=1, must=1), None],
        tags=["x", "y"],
        scores=[1.5, None, 2.0],
    )


def _with_none() -> list[int]:
    values: list[Any] = [1, None, 3]
    return values


@strawberry.type
class Broken:
    """Values that fail to complete, to compare the errors."""

    big: int = 2**40
    not_a_number: float = math.nan
    null_required: int = None  # type: ignore[assignment]
    bad_colour: Colour = "purple"  # type: ignore[assignment]
    number_as_string: str = 7  # type: ignore[assignment]
    number_as_id: strawberry.ID = 12  # type: ignore[assignment]
    nulls_in_required_list: list[int] = strawberry.field(default_factory=lambda: _with_none())
    nested: list[Leaf] = strawberry.field(
        default_factory=lambda: [
            Leaf(name="ok", value=1, must=1),
            Leaf(name="bad", value=2, must=_with_none()[1]),
        ]
    )


@strawberry.type
class Point:
    """A type without an interface: no `is_type_of` to check."""

    x: int
    label: str | None = None


@strawberry.type
class Holder:
    """Objects held as attributes, of leaves only: completed in place (compile.py)."""

    name: str
    leaf: Leaf | None = None
    point: Point | None = None
    must_point: Point = strawberry.field(default_factory=lambda: Point(x=0))


def _holders() -> list[Holder]:
    return [
        Holder(name="ok", leaf=Leaf(name="l", value=1, must=1), point=Point(x=1, label="p")),
        Holder(name="null leaf", leaf=Leaf(name="n", value=None, must=None)),  # type: ignore[arg-type]
        Holder(name="wrong type", leaf=Other(name="o", size=1.0)),  # type: ignore[arg-type]
        Holder(name="cast", leaf=strawberry.cast(Other, Leaf(name="c", value=3, must=3))),
        Holder(name="too big", point=Point(x=2**40, label=7)),  # type: ignore[arg-type]
        Holder(name="bad required", must_point=Point(x=None)),  # type: ignore[arg-type]
        Holder(name="error", leaf=ValueError("a leaf as an error")),  # type: ignore[arg-type]
    ]


@strawberry.input
class Window:
    size: int = 2


@strawberry.type
class Counter:
    n: int

    @strawberry.field
    def echo(
        self,
        info: strawberry.Info,
        window: Window | None = None,
        words: list[str] | None = None,
        colour: Colour = Colour.RED,
        at: int = 0,
    ) -> str:
        # Changes its list argument: each call must get its own.
        if words is not None:
            words.append(str(self.n))
        size = window.size if window else None
        return f"{info.path.as_list()}:{info.field_name}:{self.n}:{size}:{words}:{colour}:{at}"

    guarded_echo: str | None = strawberry.field(
        resolver=lambda: "secret", permission_classes=[Denied]
    )

    @strawberry.field
    def parent_n(self, parent: strawberry.Parent[Counter]) -> int:
        return parent.n * 10


MUTATIONS: list[str] = []


@strawberry.type
class Query:
    @strawberry.field
    async def branch(self, label: str = "root") -> Branch:
        return _branch(label)

    @strawberry.field
    def maybe_branch(self) -> Branch | None:
        return _branch("maybe")

    @strawberry.field
    def broken(self) -> Broken:
        return Broken()

    @strawberry.field
    def counters(self, count: int = 3) -> list[Counter]:
        return [Counter(n=n) for n in range(count)]

    @strawberry.field
    def holders(self) -> list[Holder | None]:
        return _holders()  # type: ignore[return-value]

    @strawberry.field
    def missing_attribute(self) -> Leaf:
        return object()  # type: ignore[return-value]

    @strawberry.field
    def mixed(self) -> list[Named]:
        return [
            Leaf(name="a", value=1, must=1),
            Other(name="b", size=1.0),
            Leaf(name="c", value=2, must=2),
            # A Leaf cast to an Other resolves by the cast, not by its class.
            strawberry.cast(Other, Leaf(name="d", value=3, must=3)),
        ]

    @strawberry.field
    def lookup(
        self,
        id: strawberry.relay.GlobalID,
        other: strawberry.relay.GlobalID | None = None,
        colour: Colour | None = None,
        note: str | None = "none",
        count: int = 1,
    ) -> str:
        return f"{id!r}:{other!r}:{colour}:{note}:{count}"


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def record(self, word: str) -> str:
        await asyncio.sleep(0.001 if word == "first" else 0)
        MUTATIONS.append(word)
        return word


@strawberry.type
class Subscription:
    @strawberry.subscription
    async def ticks(self, count: int = 3) -> AsyncGenerator[Branch, None]:
        for i in range(count):
            yield _branch(f"tick{i}")


class CountResolves(SchemaExtension):
    calls: list[str] = []  # noqa: RUF012

    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        CountResolves.calls.append(".".join(map(str, info.path.as_list())))
        return _next(root, info, *args, **kwargs)


def _schemas(**kwargs: Any) -> tuple[strawberry.Schema, strawberry.Schema]:
    types: dict[str, Any] = {"query": Query, "mutation": Mutation, "subscription": Subscription}
    stock = strawberry.Schema(**types, **kwargs)
    planned = strawberry.Schema(
        **types, execution_context_class=planned_execution_context(), **kwargs
    )
    return stock, planned


STOCK, PLANNED = _schemas()


def _outcome(result: Any) -> tuple[Any, list[dict[str, Any]]]:
    return result.data, [error.formatted for error in result.errors or ()]


async def same(
    query: str, variables: dict[str, Any] | None = None, *, schemas: Any = None
) -> tuple[Any, list[dict[str, Any]]]:
    stock, planned = schemas or (STOCK, PLANNED)
    expected = _outcome(await stock.execute(query, variable_values=variables))
    answered = _outcome(await planned.execute(query, variable_values=variables))
    assert answered == expected
    return answered


@pytest.fixture(autouse=True)
def _quiet_strawberry(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    # Strawberry logs every resolver error; these tests raise them on purpose.
    caplog.set_level("CRITICAL", logger="strawberry.execution")
    yield


async def test_nested_lists_aliases_and_arguments() -> None:
    data, errors = await same(
        """query($n: Int!) {
          branch(label: "top") {
            label
            first: children(first: $n) { label tags leaves { name value colour } }
            again: children(first: 1) { label scores children { label } }
            leaves { __typename name must }
          }
        }""",
        {"n": 3},
    )
    assert not errors
    assert [child["label"] for child in data["branch"]["first"]] == ["top.0", "top.1", "top.2"]
    assert data["branch"]["leaves"][0] == {"__typename": "Leaf", "name": "top/0", "must": 0}


async def test_errors_null_the_nearest_nullable_field() -> None:
    data, errors = await same(
        """{
          branch { label failing optionalChildren { failing failingRequired label } }
          maybeBranch { failingRequired }
        }"""
    )
    assert data["branch"]["optionalChildren"] == [None, None]
    assert data["maybeBranch"] is None
    assert {tuple(error["path"]) for error in errors} >= {
        ("branch", "failing"),
        ("branch", "optionalChildren", 0, "failingRequired"),
        ("maybeBranch", "failingRequired"),
    }


async def test_a_failing_required_root_nulls_the_data() -> None:
    data, errors = await same("{ branch { failingRequired } }")
    assert data is None
    assert errors[0]["path"] == ["branch", "failingRequired"]


async def test_errors_inside_list_items() -> None:
    _, errors = await same(
        "{ maybeBranch { zero: sometimes(index: 0) { name } one: sometimes(index: 1) { name } } }"
    )
    assert errors
    await same("{ broken { nestedRequired: nested { name must } } }")
    await same("{ broken { nullsInRequiredList } }")
    await same("{ maybeBranch { maybeLeaves { name must } scores } }")


async def test_leaves_that_cannot_be_serialized() -> None:
    _, errors = await same(
        "{ broken { big notANumber nullRequired badColour numberAsString numberAsId } }"
    )
    assert errors


async def test_values_that_are_exceptions_or_of_the_wrong_type() -> None:
    await same("{ maybeBranch { returnsError } }")
    await same("{ maybeBranch { wrongType { name } } }")
    await same("{ missingAttribute { name } }")


async def test_an_accepted_class_cast_to_another_type_is_still_refused() -> None:
    # The plan skips `is_type_of` for classes it accepted before, but not for a cast.
    for _ in range(2):
        data, errors = await same("{ maybeBranch { castElsewhere { name } } }")
        assert data == {"maybeBranch": None}
        assert [error["path"] for error in errors] == [["maybeBranch", "castElsewhere", 1]]


async def test_objects_of_leaves_held_as_attributes() -> None:
    query = """{ holders { name leaf { __typename name must v: value } point { x label }
      mustPoint { x } } }"""
    # The second time, the classes `is_type_of` accepted are completed in place.
    for _ in range(2):
        data, errors = await same(query)
        assert data["holders"][0] == {
            "name": "ok",
            "leaf": {"__typename": "Leaf", "name": "l", "must": 1, "v": 1},
            "point": {"x": 1, "label": "p"},
            "mustPoint": {"x": 0},
        }
        assert [error["path"] for error in errors] == [
            ["holders", 1, "leaf", "must"],
            ["holders", 2, "leaf", "must"],
            ["holders", 3, "leaf"],
            ["holders", 4, "point", "x"],
            ["holders", 5, "mustPoint", "x"],
            ["holders", 6, "leaf"],
        ]
        assert data["holders"][5] is None


async def test_accepted_objects_of_leaves_complete_without_a_call_each(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paths: list[list[str | int]] = []
    general = PlannedExecutionContext._complete_object

    def counted(self: Any, field: Any, plan: Any, info: Any, path: Any, value: Any) -> Any:
        paths.append(path.as_list())
        return general(self, field, plan, info, path, value)

    monkeypatch.setattr(PlannedExecutionContext, "_complete_object", counted)
    # Parsed once, as the gateway parses: the second request runs the same plan.
    schema = strawberry.Schema(
        query=Query, execution_context_class=planned_execution_context(), extensions=[ParserCache]
    )
    query = "{ a: holders { leaf { name } point { x } } }"
    await schema.execute(query)
    # The first object of each class goes through `is_type_of` (Point has none).
    assert paths == [["a", 0, "leaf"], ["a", 2, "leaf"], ["a", 3, "leaf"]]
    paths.clear()
    await schema.execute(query)
    # Then only the object cast to another type does.
    assert paths == [["a", 3, "leaf"]]


async def test_an_interface_resolves_each_class_once_then_by_the_class(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    resolved: list[str] = []
    general = PlannedExecutionContext.ensure_valid_runtime_type

    def counted(self: Any, runtime_type: Any, abstract_type: Any, *args: Any) -> Any:
        resolved.append(args[-1].name)
        return general(self, runtime_type, abstract_type, *args)

    monkeypatch.setattr(PlannedExecutionContext, "ensure_valid_runtime_type", counted)
    schema = strawberry.Schema(
        query=Query, execution_context_class=planned_execution_context(), extensions=[ParserCache]
    )
    query = "{ mixed { __typename name } }"
    expected = _outcome(await STOCK.execute(query))
    assert _outcome(await schema.execute(query)) == expected
    # Strawberry's resolver answers for the first object of each class, and the cast one.
    assert resolved == ["a", "b", "d"]
    resolved.clear()
    assert _outcome(await schema.execute(query)) == expected
    # Then only for the object cast to another type.
    assert resolved == ["d"]
    assert [item["__typename"] for item in expected[0]["mixed"]] == [
        "Leaf",
        "Other",
        "Leaf",
        "Other",
    ]


async def test_an_operation_leaves_nothing_for_the_garbage_collector() -> None:
    # graphql-core's executor refers to itself through its resolve infos' helpers: a
    # cycle that kept each request's executor, context and loaders until a collection.
    recorded, made = recording_executor()
    schema = strawberry.Schema(query=Query, execution_context_class=recorded)
    gc.disable()
    try:
        result = await schema.execute('{ branch(label: "top") { label children { label } } }')
        assert not result.errors
        assert made
        assert all(executor() is None for executor in made)
    finally:
        gc.enable()


async def test_fragments_on_interfaces_and_unions() -> None:
    data, errors = await same(
        """
        fragment LeafParts on Leaf { value colour }
        query {
          branch {
            things { __typename ... on Named { name } ...LeafParts ... on Other { size } }
            named { __typename name ... on Leaf { must } }
          }
        }"""
    )
    assert not errors
    assert data["branch"]["things"][1] == {"__typename": "Other", "name": "o", "size": 2.5}


@pytest.mark.parametrize("hide", [True, False])
async def test_skip_and_include_with_variables(hide: bool) -> None:
    query = """query($hide: Boolean!, $show: Boolean!) {
      branch {
        label @skip(if: $hide)
        tags @include(if: $show)
        leaves { name ...L @skip(if: $hide) }
      }
    }
    fragment L on Leaf { value }"""
    data, _ = await same(query, {"hide": hide, "show": not hide})
    assert ("label" in data["branch"]) is not hide
    # The same document with the other values gets a plan of its own.
    await same(query, {"hide": not hide, "show": hide})


async def test_introspection() -> None:
    await same(get_introspection_query(descriptions=True))
    await same('{ __type(name: "Branch") { name fields { name type { name kind } } } }')


async def test_permission_classes_are_checked_as_before() -> None:
    data, errors = await same("{ branch { label guarded } }")
    assert data is None
    assert errors[0]["message"] == "not for you"
    executor, plan = _plan_of(PLANNED, "{ branch { label guarded } }")
    branch = plan.root.fields[0].shape
    assert isinstance(branch, ObjectShape)
    modes = {field.name: field.mode for field in branch.plan(executor).fields}
    assert modes == {"label": LEAF, "guarded": RESOLVE}


async def test_mutations_run_in_order() -> None:
    MUTATIONS.clear()
    await same('mutation { a: record(word: "first") b: record(word: "second") }')
    assert MUTATIONS == ["first", "second", "first", "second"]


async def test_resolver_middleware_sees_every_field() -> None:
    stock, planned = _schemas(extensions=[CountResolves])
    query = "{ branch { label leaves { name } children(first: 1) { tags } } }"
    CountResolves.calls.clear()
    await stock.execute(query)
    seen_by_stock = list(CountResolves.calls)
    CountResolves.calls.clear()
    await same(query, schemas=(stock, planned))
    assert CountResolves.calls[len(seen_by_stock) :] == seen_by_stock
    assert "branch.leaves.0.name" in seen_by_stock


async def test_subscription_events() -> None:
    query = "subscription { ticks(count: 2) { label leaves { name } failing } }"
    answers = []
    for schema in (STOCK, PLANNED):
        stream = await schema.subscribe(query)
        assert not isinstance(stream, ExecutionResult)
        answers.append([_outcome(result) async for result in stream])
    assert answers[0] == answers[1]
    assert len(answers[0]) == 2


async def test_plans_are_kept_per_document_and_bounded() -> None:
    executor_class = planned_execution_context(max_plans=2)
    schema = strawberry.Schema(
        query=Query, execution_context_class=executor_class, extensions=[ParserCache]
    )
    for _ in range(3):
        await schema.execute("{ branch { label } }")
    assert len(executor_class.plans) == 1
    for query in ("{ branch { tags } }", "{ maybeBranch { label } }"):
        await schema.execute(query)
    assert len(executor_class.plans) == 2


async def test_a_plan_goes_with_its_document() -> None:
    executor_class = planned_execution_context(max_plans=10)
    # No parse cache: nothing else keeps the document once the operation is done.
    schema = strawberry.Schema(query=Query, execution_context_class=executor_class)
    await schema.execute("{ branch { label } }")
    gc.collect()
    assert len(executor_class.plans) == 0


def _plan_of(schema: strawberry.Schema, query: str) -> tuple[Executor[Any], OperationPlan]:
    executor_class: type[PlannedExecutionContext] = schema.execution_context_class  # type: ignore[assignment]
    executor = executor_class.build(schema._schema, parse(query))
    assert isinstance(executor, Executor)
    return executor, executor_class.plans.plan(executor)


RESOLVED: list[str] = []


@strawberry.type
class Watched:
    name: str

    @strawberry.field
    def seen_by(self, info: strawberry.Info) -> str:
        RESOLVED.append(self.name)
        return str(info.context["scope"])


class Feed:
    """One payload object per event for every subscriber, as `Event.memo` gives."""

    def __init__(self, subscribers: int) -> None:
        self.queues: list[asyncio.Queue[Watched | None]] = []
        self.subscribers = subscribers
        self.all_subscribed = asyncio.Event()

    def subscribe(self) -> asyncio.Queue[Watched | None]:
        queue: asyncio.Queue[Watched | None] = asyncio.Queue()
        self.queues.append(queue)
        if len(self.queues) == self.subscribers:
            self.all_subscribed.set()
        return queue

    def publish(self, payload: Watched | None) -> None:
        for queue in self.queues:
            queue.put_nowait(payload)


@strawberry.type
class WatchSubscription:
    @strawberry.subscription
    async def watched(self, info: strawberry.Info) -> AsyncGenerator[Watched, None]:
        queue = info.context["feed"].subscribe()
        while (payload := await queue.get()) is not None:
            yield payload


async def test_subscribers_in_one_scope_share_each_event_execution() -> None:
    schema = strawberry.Schema(
        query=Query,
        subscription=WatchSubscription,
        execution_context_class=planned_execution_context(
            share_events_by=lambda context: context["scope"]
        ),
        # Shared executions need the same document: the parser cache hands it out.
        extensions=[ParserCache],
    )
    scopes = ("a", "a", "a", "b")
    feed = Feed(len(scopes))
    query = "subscription { watched { name seenBy } }"
    streams = [
        await schema.subscribe(query, context_value={"feed": feed, "scope": scope})
        for scope in scopes
    ]
    received: list[list[Any]] = [[] for _ in streams]

    async def read(index: int, stream: Any) -> None:
        async for result in stream:
            received[index].append(_outcome(result))

    readers = [asyncio.ensure_future(read(i, s)) for i, s in enumerate(streams)]
    await feed.all_subscribed.wait()
    RESOLVED.clear()
    for name in ("first", "second"):
        feed.publish(Watched(name=name))
    feed.publish(None)
    await asyncio.gather(*readers)
    # One execution per event and scope: scope "a" (three subscribers) and "b".
    assert sorted(RESOLVED) == ["first", "first", "second", "second"]
    expected: list[Any] = [
        ({"watched": {"name": n, "seenBy": "a"}}, []) for n in ("first", "second")
    ]
    assert received[:3] == [expected] * 3
    assert received[3] == [
        ({"watched": {"name": n, "seenBy": "b"}}, []) for n in ("first", "second")
    ]


async def test_resolver_functions_called_directly_answer_as_through_strawberry() -> None:
    data, errors = await same(
        """query($words: [String!], $at: Int!) { counters(count: 3) {
          n parentN guardedEcho
          echo(words: $words, window: {size: 4}, colour: GREEN, at: $at)
          plain: echo
        } }""",
        {"words": ["a"], "at": 7},
    )
    assert [c["echo"] for c in data["counters"]] == [
        f"['counters', {n}, 'echo']:echo:{n}:4:['a', '{n}']:Colour.GREEN:7" for n in range(3)
    ]
    assert [c["parentN"] for c in data["counters"]] == [0, 10, 20]
    assert {error["message"] for error in errors} == {"not for you"}
    counter = PLANNED._schema.type_map["Counter"]
    assert isinstance(counter, GraphQLObjectType)
    # Permission classes keep Strawberry's wrapper; a plain resolver function does not.
    assert direct_resolver(counter.fields["guardedEcho"]) is None
    assert direct_resolver(counter.fields["echo"]) is not None


async def test_literal_arguments_are_converted_once_per_plan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schema = strawberry.Schema(
        query=Query, execution_context_class=planned_execution_context(), extensions=[ParserCache]
    )
    conversions: list[str] = []
    convert = DirectResolver.convert

    def counted(self: DirectResolver, info: Any, coerced: dict[str, Any]) -> Any:
        conversions.append(self.field.name)
        return convert(self, info, coerced)

    monkeypatch.setattr(DirectResolver, "convert", counted)
    literal = "{ counters(count: 2) { echo(colour: GREEN, at: 3) } }"
    by_variable = "query($at: Int!) { counters(count: 2) { echo(colour: GREEN, at: $at) } }"
    for at in (3, 3):
        answered = await schema.execute(literal)
        assert answered.errors is None and answered.data is not None
        assert answered.data["counters"][1]["echo"].endswith(":Colour.GREEN:3")
        varied = await schema.execute(by_variable, variable_values={"at": at})
        assert varied.data == answered.data
    # The literal's once for both requests; the variable's once per request.
    assert conversions.count("echo") == 3


async def test_arguments_are_handed_over_as_strawberry_converts_them() -> None:
    query_type = PLANNED._schema.type_map["Query"]
    assert isinstance(query_type, GraphQLObjectType)
    lookup = direct_resolver(query_type.fields["lookup"])
    assert lookup is not None and lookup.compiled_arguments is not None
    # Input objects and lists are compiled too (tests/unit/engine/test_argument_conversion.py).
    counter = PLANNED._schema.type_map["Counter"]
    assert isinstance(counter, GraphQLObjectType)
    echo = direct_resolver(counter.fields["echo"])
    assert echo is not None and echo.compiled_arguments is not None

    leaf_id = strawberry.relay.to_base64("Leaf", "7")
    data, errors = await same(
        "query($other: ID!, $colour: Colour) {"
        f' a: lookup(id: "{leaf_id}", note: null, count: 2)'
        " b: lookup(id: $other, other: $other, colour: $colour) }",
        {"other": leaf_id, "colour": "RED"},
    )
    assert errors == []
    assert data["a"] == "GlobalID(type_name='Leaf', node_id='7'):None:None:None:2"
    assert data["b"].endswith(":Colour.RED:none:1")
    # A value that is no global id: Strawberry's error, at the field.
    _, errors = await same('{ lookup(id: "not an id") }')
    assert [error["message"] for error in errors] == [
        'Value cannot represent a GlobalID: "not an id".'
    ]
