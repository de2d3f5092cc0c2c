from __future__ import annotations

from graphql import parse

from gateway.limits.shape import DocumentShape, measure


def test_depth_counts_every_level_of_fields_including_introspection() -> None:
    shape = measure(parse("{ a { b { c } } __schema { types { name } } }"))
    assert shape == DocumentShape(depth=3, fields=6, aliases=0, root_fields=2)


def test_fragments_count_where_they_are_spread() -> None:
    document = parse(
        "query { x: a { ...F ... on T { y: c } } b { ...F } } fragment F on T { d { e } }"
    )
    assert measure(document) == DocumentShape(depth=3, fields=7, aliases=2, root_fields=2)


def test_a_fragment_cycle_adds_nothing_and_ends() -> None:
    document = parse("{ a { ...F } } fragment F on T { b ...G } fragment G on T { c ...F }")
    assert measure(document) == DocumentShape(depth=2, fields=3, aliases=0, root_fields=1)


def test_every_operation_is_measured() -> None:
    document = parse("query A { a { b } } query B { c d e }")
    assert measure(document) == DocumentShape(depth=2, fields=5, aliases=0, root_fields=3)
