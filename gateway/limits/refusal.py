"""QUERY_TOO_COMPLEX refusals: each names the limit, the value found and the maximum."""

from __future__ import annotations

from dataclasses import dataclass

from graphql import GraphQLError
from starlette.responses import Response

from gateway.errors import error_response
from resolvers.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class TooComplex:
    what: str  # "The document is nested 31 levels deep"
    value: int | str
    maximum: int
    setting: str  # the environment variable that raises it
    code: ErrorCode = ErrorCode.QUERY_TOO_COMPLEX
    advice: str = "Ask for less, or split the operation."

    @property
    def message(self) -> str:
        return f"{self.what}; the limit is {self.maximum:,} ({self.setting}). {self.advice}"

    @property
    def extensions(self) -> dict[str, object]:
        return {
            "code": self.code.value,
            "limit": self.setting,
            "value": self.value,
            "maximum": self.maximum,
        }

    def error(self) -> GraphQLError:
        return GraphQLError(self.message, extensions=self.extensions)

    def response(self, status_code: int, *, accept: str | None) -> Response:
        """For refusals made before GraphQL runs (body and document size)."""
        return error_response(
            self.code,
            self.message,
            status_code,
            accept=accept,
            extensions=self.extensions,
        )


class Refused(Exception):
    """Raised where a transport refuses a request before GraphQL sees it."""

    def __init__(self, refusal: TooComplex) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


def document_size_refusal(query: object, max_chars: int) -> TooComplex | None:
    """Checked by each transport before parsing: a long document in a GET or a
    WebSocket message never reaches the parser."""
    if not isinstance(query, str) or len(query) <= max_chars:
        return None
    return TooComplex(
        f"The document is {len(query):,} characters long",
        len(query),
        max_chars,
        "POLYGRAPH_MAX_DOCUMENT_CHARS",
    )


def head_refusal(received: int, max_bytes: int) -> TooComplex:
    """Found as a request's line and headers arrive, before the app sees them."""
    return TooComplex(
        f"The request line and headers are over {received:,} bytes",
        received,
        max_bytes,
        "POLYGRAPH_MAX_HEADER_BYTES",
        advice="Send a long document in a POST body, not in the query string or a header.",
    )


def response_size_refusal(size: int, max_bytes: int) -> TooComplex:
    """Found once the response is encoded: the work is done, but nothing is sent."""
    return TooComplex(
        f"The response is {size:,} bytes",
        size,
        max_bytes,
        "POLYGRAPH_MAX_RESPONSE_BYTES",
        ErrorCode.RESPONSE_TOO_LARGE,
    )
