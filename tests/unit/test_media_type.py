from __future__ import annotations

import pytest

from gateway.media import negotiate_media_type


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, "application/graphql-response+json"),
        ("*/*", "application/graphql-response+json"),
        ("application/json", "application/json"),
        (
            "application/graphql-response+json, application/json;q=0.9",
            "application/graphql-response+json",
        ),
        ("application/json, text/plain", "application/json"),
    ],
)
def test_negotiate_media_type(accept: str | None, expected: str) -> None:
    assert negotiate_media_type(accept) == expected


def test_only_short_accept_values_are_remembered() -> None:
    from gateway import media

    kept = media._negotiated.cache_info().currsize
    long_accept = "application/json, " + ", ".join(f"x/y{n}" for n in range(10_000))
    assert negotiate_media_type(long_accept) == "application/json"
    assert media._negotiated.cache_info().currsize == kept
