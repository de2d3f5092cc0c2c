from __future__ import annotations

from graphql import get_introspection_query

from schema import SDL_PATH, build_schema, export_sdl


def test_checked_in_sdl_matches_the_code() -> None:
    assert SDL_PATH.exists(), "run `polygraph schema export` and commit schema/schema.graphql"
    assert SDL_PATH.read_text() == export_sdl(), (
        "schema/schema.graphql drifted from the code; run `polygraph schema export`"
    )


def test_introspection_answers_every_default_value() -> None:
    """GraphiQL, codegen and federation tools introspect; JSON defaults (`{}`) once
    failed there with "Cannot convert value to AST"."""
    result = build_schema().execute_sync(get_introspection_query())
    assert result.errors is None
    assert result.data is not None
    types = {t["name"]: t for t in result.data["__schema"]["types"]}
    fields = {f["name"]: f for f in types["CreateTaskInput"]["inputFields"]}
    assert fields["payload"]["defaultValue"].replace(" ", "") == "{}"
    assert fields["type"]["defaultValue"] == '"generic"'
