"""A resolver field marked `settled_by` (schema/settled.py) answers on the planned
executor exactly as graphql-core's executor answers through the resolver; the
resolver runs only for the first parent, to work out the arguments, and for parents
whose value was not loaded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import strawberry

from gateway.engine import planned_execution_context
from schema.settled import SETTLED_NULL, settled_by
from tests.support.executors import assert_same_answer

# The parent names whose greeting "a parent page" loaded, and the resolver's calls.
LOADED: dict[str, str] = {}
CALLS: list[str] = []
PREPARED: list[Mapping[str, Any]] = []
FAIL_TO_PREPARE: list[bool] = []


def _prepare(
    context: Any, nodes: list[Any], fragments: Mapping[str, Any], arguments: Mapping[str, Any]
) -> Callable[[Parent], str | None]:
    if FAIL_TO_PREPARE:
        raise RuntimeError("cannot prepare")
    PREPARED.append(dict(arguments))
    suffix = arguments["suffix"]

    def greeting_of(parent: Parent) -> str | None:
        if parent.name == "odd":
            raise KeyError(parent.name)
        found = LOADED.get(parent.name)
        return None if found is None else f"{found}{suffix}"

    return greeting_of


@strawberry.type
class Parent:
    name: str

    @strawberry.field
    @settled_by(_prepare)
    def greeting(self, suffix: str = "!") -> str | None:
        CALLS.append(self.name)
        if self.name == "boom":
            raise ValueError("no greeting for boom")
        return f"hello {self.name}{suffix}"


@strawberry.type
class Query:
    @strawberry.field
    def parents(self, names: list[str]) -> list[Parent]:
        return [Parent(name=name) for name in names]


STOCK = strawberry.Schema(query=Query)
PLANNED = strawberry.Schema(query=Query, execution_context_class=planned_execution_context())
QUERY = """query($names: [String!]!) { parents(names: $names) {
  name greeting loud: greeting(suffix: "!!") } }"""


async def _same(names: list[str]) -> list[str]:
    """Both executors' answers are equal; the planned one's resolver calls."""
    LOADED.clear()
    LOADED.update({name: f"hello {name}" for name in ("a", "b", "c")})
    CALLS.clear()
    expected = await STOCK.execute(QUERY, variable_values={"names": names})
    assert [name for name in names for _ in range(2)] == CALLS
    CALLS.clear()
    PREPARED.clear()
    answered = await PLANNED.execute(QUERY, variable_values={"names": names})
    assert_same_answer(answered, expected)
    return list(CALLS)


async def test_loaded_values_answer_without_the_resolver() -> None:
    # Once per response key: the first parent works out the converted arguments.
    assert await _same(["a", "b", "c"]) == ["a", "a"]
    assert PREPARED == [{"suffix": "!"}, {"suffix": "!!"}]


async def test_a_parent_whose_value_was_not_loaded_gets_the_resolver() -> None:
    assert await _same(["a", "unloaded", "b", "boom", "odd"]) == [
        "a",
        "a",
        "unloaded",
        "unloaded",
        "boom",
        "boom",
        "odd",
        "odd",
    ]


async def test_a_field_that_cannot_be_prepared_gets_the_resolver_for_every_parent() -> None:
    FAIL_TO_PREPARE.append(True)
    try:
        assert await _same(["a", "b"]) == ["a", "a", "b", "b"]
    finally:
        FAIL_TO_PREPARE.clear()


# Object fields answered by a settled function: completed inline by the compiled plan.
FRIENDS: dict[str, str | None] = {}


@strawberry.type
class Friend:
    name: str
    nickname: str


def _friend(name: str) -> Friend | None:
    found = FRIENDS[name]
    if found is None:
        return None
    # "nameless" makes an object whose required leaf is null.
    nickname: Any = None if found == "nameless" else f"{found}y"
    return Friend(name=found, nickname=nickname)


def _prepare_friend(
    context: Any, nodes: list[Any], fragments: Mapping[str, Any], arguments: Mapping[str, Any]
) -> Callable[[Person], Any]:
    def friend_of(person: Person) -> Any:
        if person.name == "odd":
            raise KeyError(person.name)
        if person.name not in FRIENDS:
            return None
        friend = _friend(person.name)
        return SETTLED_NULL if friend is None else friend

    return friend_of


@strawberry.type
class Person:
    name: str

    @strawberry.field
    @settled_by(_prepare_friend)
    def friend(self) -> Friend | None:
        CALLS.append(self.name)
        if self.name == "boom":
            raise ValueError("no friend for boom")
        return _friend(self.name) if self.name in FRIENDS else Friend(name="new", nickname="n")

    @strawberry.field
    @settled_by(_prepare_friend)
    def best_friend(self) -> Friend:
        CALLS.append(self.name)
        if self.name == "boom":
            raise ValueError("no best friend for boom")
        found = _friend(self.name) if self.name in FRIENDS else Friend(name="new", nickname="n")
        return found  # type: ignore[return-value]


@strawberry.type
class PeopleQuery:
    @strawberry.field
    def people(self, names: list[str]) -> list[Person | None]:
        return [Person(name=name) for name in names]


STOCK_PEOPLE = strawberry.Schema(query=PeopleQuery)
PLANNED_PEOPLE = strawberry.Schema(
    query=PeopleQuery, execution_context_class=planned_execution_context()
)


async def test_settled_objects_null_and_fail_as_their_resolvers_do() -> None:
    FRIENDS.clear()
    FRIENDS.update({"a": "ann", "b": None, "c": "nameless", "d": "dan"})
    for query in (
        "query($n: [String!]!) { people(names: $n) { name friend { name nickname } } }",
        "query($n: [String!]!) { people(names: $n) { name bestFriend { name } } }",
        "query($n: [String!]!) { people(names: $n) { bestFriend { nickname } } }",
    ):
        names = ["a", "b", "c", "unloaded", "d", "boom", "odd"]
        expected = await STOCK_PEOPLE.execute(query, variable_values={"n": names})
        CALLS.clear()
        answered = await PLANNED_PEOPLE.execute(query, variable_values={"n": names})
        assert_same_answer(answered, expected)
        assert expected.errors
        # The first parent's call prepares the field; then only the parents whose
        # value was not loaded or could not be read.
        assert CALLS == ["a", "unloaded", "boom", "odd"]
