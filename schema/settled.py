"""Resolver fields whose value a parent has already loaded for its whole page.

A page of agents loads every agent's `tasks` page in one query before its agents
complete (`schema/agents.py: agents_page`); each agent's `tasks` resolver then only
looks its page up. `settled_by(prepare)` marks such a resolver: the planned executor
(gateway/engine/executor.py) calls `prepare` once per request and field, with the
request's context, the field's nodes and fragments and its converted arguments, and
`prepare` gives back a function from a parent object to the field's value, or to None
when that value was not loaded (`SETTLED_NULL` when it was, and is null). The executor
then asks that function for each parent and calls the resolver itself only for a None:
no resolve info, `Info` or keyword arguments per parent. What the function returns
must be what the resolver would.
Only a field whose arguments convert to immutable values (numbers, strings, enums,
ids) takes this path, since one conversion serves every parent; `prepare` must not
change the arguments it is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

from graphql import FieldNode, FragmentDefinitionNode

SETTLED_BY = "polygraph_settled_by"


class SettledNull:
    """The type of `SETTLED_NULL`: a settled value that is null, since None already
    means "not loaded, ask the resolver"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "SETTLED_NULL"


SETTLED_NULL: Final = SettledNull()

SettledValue = Callable[[Any], Any | None]
Prepare = Callable[
    [Any, list[FieldNode], Mapping[str, FragmentDefinitionNode], Mapping[str, Any]], SettledValue
]
F = TypeVar("F", bound=Callable[..., Any])


def settled_by(prepare: Prepare) -> Callable[[F], F]:
    """Mark a resolver function as answered by `prepare`'s function when it can be."""

    def mark(function: F) -> F:
        setattr(function, SETTLED_BY, prepare)
        return function

    return mark


def settled_preparer(function: Callable[..., Any]) -> Prepare | None:
    prepare: Prepare | None = getattr(function, SETTLED_BY, None)
    return prepare
