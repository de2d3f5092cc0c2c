"""A list of plain objects (leaves, `__typename`, objects of leaves, lists of them)
completed by one compiled loop answers exactly as graphql-core's executor does; anything the loop does
not expect gives the list to the general path, item by item, with the same errors."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import pytest
import strawberry
from strawberry.extensions import ParserCache

from gateway.engine import PlannedExecutionContext, planned_execution_context
from tests.support.executors import assert_same_answer


@strawberry.enum
class Kind(Enum):
    KNOWS = "knows"
    BLOCKS = "blocks"


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Member(Named):
    id: strawberry.ID


@strawberry.type
class Point:
    time: datetime
    value: float | None


@strawberry.type
class Link:
    kind: Kind
    source: Member | None
    target: Member

    @strawberry.field
    def label(self) -> str:
        return f"{self.source and self.source.name} {self.kind.value}"


@strawberry.type
class Series:
    name: str
    points: list[Point]


@strawberry.type
class NotAMember:
    name: str
    id: strawberry.ID


# What the resolvers answer, set by each test.
POINTS: list[Any] = []
LINKS: list[Any] = []
SERIES: list[Any] = []


@strawberry.type
class Query:
    @strawberry.field
    def points(self) -> list[Point | None]:
        return POINTS

    @strawberry.field
    def links(self) -> list[Link]:
        return LINKS

    @strawberry.field
    def series(self) -> list[Series]:
        return SERIES


STOCK = strawberry.Schema(query=Query)
# As the gateway's: a document's plan, and what it learnt, serve every request of it.
PLANNED = strawberry.Schema(
    query=Query, execution_context_class=planned_execution_context(), extensions=[ParserCache]
)
AT = datetime(2026, 12, 6, 4, 5, tzinfo=UTC)


@pytest.fixture
def general_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The lists the general path completed item by item, by their field's name."""
    completed: list[str] = []
    original = PlannedExecutionContext._complete_items

    def recorded(self: PlannedExecutionContext, field: Any, *args: Any) -> Any:
        completed.append(field.name)
        return original(self, field, *args)

    monkeypatch.setattr(PlannedExecutionContext, "_complete_items", recorded)
    yield completed


async def _same(query: str) -> Any:
    expected = await STOCK.execute(query)
    answered = await PLANNED.execute(query)
    assert_same_answer(answered, expected)
    return answered


POINTS_QUERY = "{ points { __typename time at: time value } }"


async def test_leaves_complete_in_one_loop(general_path: list[str]) -> None:
    POINTS[:] = [Point(time=AT, value=1.5), Point(time=AT, value=None)]
    answered = await _same(POINTS_QUERY)
    assert answered.data["points"][1] == {
        "__typename": "Point",
        "time": "2026-12-06T04:05:00+00:00",
        "at": "2026-12-06T04:05:00+00:00",
        "value": None,
    }
    assert general_path == []


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param(None, id="a null item"),
        pytest.param(Point(time=None, value=1.0), id="a null in a non-null leaf"),  # type: ignore[arg-type]
        pytest.param(Point(time=AT, value="many"), id="a value the serializer refuses"),  # type: ignore[arg-type]
        pytest.param(ValueError("lost"), id="an error in place of an item"),
    ],
)
async def test_anything_unexpected_takes_the_general_path(
    general_path: list[str], odd: Any
) -> None:
    POINTS[:] = [Point(time=AT, value=1.0), odd, Point(time=AT, value=2.0)]
    await _same(POINTS_QUERY)
    assert general_path == ["points"]


LINKS_QUERY = "{ links { kind source { id name __typename } target { name } } }"


def _links(target: Any = None) -> list[Link]:
    ann = Member(name="ann", id=strawberry.ID("m1"))
    bob = Member(name="bob", id=strawberry.ID("m2"))
    return [
        Link(kind=Kind.KNOWS, source=ann, target=bob),
        Link(kind=Kind.BLOCKS, source=None, target=target or ann),
    ]


async def test_objects_of_a_class_is_type_of_accepted_before_complete_in_the_loop(
    general_path: list[str],
) -> None:
    LINKS[:] = _links()
    # `Member` has an interface, so `is_type_of` checks each object; the general path
    # calls it, and the loop takes the classes it accepted.
    await _same(LINKS_QUERY)
    general_path.clear()
    answered = await _same(LINKS_QUERY)
    assert answered.data["links"][1] == {
        "kind": "BLOCKS",
        "source": None,
        "target": {"name": "ann"},
    }
    assert general_path == []


async def test_an_object_is_type_of_refuses_takes_the_general_path(
    general_path: list[str],
) -> None:
    LINKS[:] = _links()
    await _same(LINKS_QUERY)
    LINKS[:] = _links(target=NotAMember(name="eve", id=strawberry.ID("x")))
    general_path.clear()
    answered = await _same(LINKS_QUERY)
    assert answered.errors
    assert general_path == ["links"]


async def test_a_field_with_a_resolver_takes_the_general_path(general_path: list[str]) -> None:
    LINKS[:] = _links()
    await _same("{ links { kind label } }")
    await _same("{ links { kind label } }")
    assert general_path == ["links", "links"]


SERIES_QUERY = "{ series { name points { time value } } }"


def _series(*points: Any) -> list[Series]:
    return [
        Series(name="energy", points=[Point(time=AT, value=1.0), Point(time=AT, value=None)]),
        Series(name="empty", points=[]),
        Series(name="odd", points=list(points)),
    ]


async def test_lists_of_objects_inside_items_complete_in_the_loop(
    general_path: list[str],
) -> None:
    SERIES[:] = _series(Point(time=AT, value=2.5))
    answered = await _same(SERIES_QUERY)
    assert answered.data["series"][0] == {
        "name": "energy",
        "points": [
            {"time": "2026-12-06T04:05:00+00:00", "value": 1.0},
            {"time": "2026-12-06T04:05:00+00:00", "value": None},
        ],
    }
    assert answered.data["series"][1]["points"] == []
    assert general_path == []


@pytest.mark.parametrize(
    "odd",
    [
        pytest.param([None], id="a null item in an item's list"),
        pytest.param([Point(time=None, value=1.0)], id="a null in a non-null leaf"),  # type: ignore[arg-type]
        pytest.param([ValueError("lost")], id="an error in place of an item's item"),
        pytest.param((Point(time=AT, value=1.0),), id="an item's list that is a tuple"),
        pytest.param(None, id="a null list in a non-null field"),
    ],
)
async def test_anything_unexpected_in_an_items_list_takes_the_general_path(
    general_path: list[str], odd: Any
) -> None:
    SERIES[:] = _series()
    SERIES[2].points = odd
    await _same(SERIES_QUERY)
    assert general_path[:1] == ["series"]
