"""Refusals that depend on the request alone, remembered and answered again unparsed.

A document that fails to parse, fails validation or is over a request limit is refused
the same way whoever sends it and however often: the outcome depends on the request's
body (document, operation name, variables) and on this gateway's configuration,
nothing else. A client that sends it again, as a flood does, gets the remembered
answer without its body being decoded, parsed, validated or measured again.

Keys are a digest of the method and the body (or query string of a GET), so a
remembered refusal holds no document text. A request naming a persisted document
(`extensions`, `documentId`) is never remembered: what it names can change.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from strawberry.http import GraphQLHTTPResponse

from resolvers.errors import ErrorCode
from stores.cache.lru import Lru

# The codes a refusal made before execution may carry to be remembered: none of
# them depends on who asks or when.
_REQUEST_ONLY_CODES = frozenset(
    code.value
    for code in (
        ErrorCode.GRAPHQL_PARSE_FAILED,
        ErrorCode.GRAPHQL_VALIDATION_FAILED,
        ErrorCode.QUERY_TOO_COMPLEX,
    )
)
# A refusal listing this many errors is answered anew each time rather than kept.
_MAX_ERRORS = 20
# Nor one whose messages are longer: a message may quote a literal of the document,
# indented (a list literal 150 levels deep, 335 characters, is quoted in 20 kB), and
# the memory held for remembered refusals stays about 1,024 times this.
_MAX_MESSAGE_CHARS = 4096

STATE_KEY = "known_refusal_key"


def request_key(method: str, payload: bytes) -> bytes:
    """What a request is remembered by: its method and its body or query string."""
    digest = hashlib.blake2b(method.encode() + b"\0", digest_size=20)
    digest.update(payload)
    return digest.digest()


def request_only(response: Mapping[str, object]) -> bool:
    """True for a response worth remembering: it refused the request before anything
    executed, for reasons found in the request alone, in short messages."""
    # A response with data executed; one with extensions carries this request's own.
    if "data" in response or response.get("extensions"):
        return False
    errors = response.get("errors")
    if not isinstance(errors, list) or not errors or len(errors) > _MAX_ERRORS:
        return False
    message_chars = 0
    for error in errors:
        extensions = error.get("extensions") if isinstance(error, dict) else None
        if not isinstance(extensions, dict) or extensions.get("code") not in _REQUEST_ONLY_CODES:
            return False
        message_chars += len(str(error.get("message", "")))
    return message_chars <= _MAX_MESSAGE_CHARS


class KnownRefusals:
    """The latest `maxsize` request-only refusals, by request key; one per app."""

    __slots__ = ("_maxsize", "_refusals", "answered")

    def __init__(self, maxsize: int = 1024) -> None:
        self._maxsize = maxsize
        self._refusals: Lru[bytes, GraphQLHTTPResponse] = Lru(max(maxsize, 1))
        # Refusals answered from memory since the app started.
        self.answered = 0

    def __len__(self) -> int:
        return len(self._refusals)

    def get(self, key: bytes) -> GraphQLHTTPResponse | None:
        refusal = self._refusals.get(key)
        if refusal is not None:
            self.answered += 1
        return refusal

    def remember(self, key: bytes, response: GraphQLHTTPResponse) -> None:
        if self._maxsize < 1 or not request_only(response):
            return
        self._refusals.put(key, response)
