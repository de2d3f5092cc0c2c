"""Response media types (GraphQL over HTTP, section 6.4.1)."""

from __future__ import annotations

from stores.cache.lru import RememberedForShortTexts

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
APPLICATION_JSON = "application/json"


# Header values worked out once are remembered, 64 of each kind, up to this length:
# clients send the same few short values, and a header may be a megabyte long.
REMEMBERED_HEADER_CHARS = 256


def negotiate_media_type(accept: str | None) -> str:
    """`application/graphql-response+json` unless the client only accepts `application/json`
    (remembered: clients send the same few values)."""
    return _negotiated(accept) if accept else GRAPHQL_RESPONSE_JSON


def _negotiate(accept: str) -> str:
    accepted = {part.split(";", 1)[0].strip().lower() for part in accept.split(",")}
    if GRAPHQL_RESPONSE_JSON in accepted or "*/*" in accepted or "application/*" in accepted:
        return GRAPHQL_RESPONSE_JSON
    if APPLICATION_JSON in accepted:
        return APPLICATION_JSON
    return GRAPHQL_RESPONSE_JSON


_negotiated = RememberedForShortTexts(_negotiate, maxsize=64, max_chars=REMEMBERED_HEADER_CHARS)
