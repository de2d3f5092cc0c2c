"""The limits one request must stay within, checked before anything executes."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True, kw_only=True, slots=True)
class RequestLimits:
    """Defaults fit the standard introspection query (depth 15, about 230 fields, 190
    tokens) and every query in README and `bench/` with room to spare."""

    # Bytes of an HTTP body (and of a WebSocket message), refused with 413 unread.
    max_body_bytes: int = 2 * 1024 * 1024
    # Characters of a GraphQL document, however it arrives (POST, GET, WebSocket).
    max_document_chars: int = 100_000
    max_tokens: int = 2_000
    # Levels of nested fields, `{ a { b } }` being 2; introspection fields count too.
    max_depth: int = 15
    max_aliases: int = 30
    max_root_fields: int = 20
    # Fields once every fragment is expanded.
    max_fields: int = 1_000
    # Items in any list argument other than a list of ids (those take MAX_PAGE_SIZE).
    max_list_length: int = 5_000
    # The static cost model's estimate (`cost.py`): the S2 benchmark query costs 7,451,
    # the standard introspection query about 4,100.
    max_cost: int = 25_000
    # An operation still running after this is cancelled (subscriptions excepted).
    deadline_s: float = 30.0
    # Bytes of an encoded response (one subscription event, over a WebSocket).
    max_response_bytes: int = 10_000_000

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value <= 0:
                raise ValueError(f"{field.name} must be positive, got {value}")


DEFAULT_LIMITS = RequestLimits()
# Bytes of a request's line and headers, applied by the server (gateway.http_protocol).
# Go's net/http default (Node allows 16 KiB, nginx 32 KiB): room for a GET carrying a
# whole document in its query string.
DEFAULT_MAX_HEAD_BYTES = 1024 * 1024
# Seconds a request's line and headers may take to arrive, and a body may pause (nginx
# allows 60 for each, Apache 20 to 40).
DEFAULT_READ_TIMEOUT_S = 30.0
# Seconds over which a client must take its share of a response waiting for it
# (nginx's send_timeout is 60).
DEFAULT_SEND_TIMEOUT_S = 30.0
# Connections one client address may hold open: a pool of a service's clients, or a
# browser's six plus its WebSockets, fit many times over; one client cannot take the
# process's file descriptors (20,000 here) from the rest.
DEFAULT_MAX_CONNECTIONS_PER_ADDRESS = 256
