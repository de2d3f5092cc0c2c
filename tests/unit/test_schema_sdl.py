from __future__ import annotations

from schema import SDL_PATH, export_sdl


def test_checked_in_sdl_matches_the_code() -> None:
    assert SDL_PATH.exists(), "run `polygraph schema export` and commit schema/schema.graphql"
    assert SDL_PATH.read_text() == export_sdl(), (
        "schema/schema.graphql drifted from the code; run `polygraph schema export`"
    )
