"""CSRF prevention, Apollo Router's rule: an operation is only run from a request a
browser would have preflighted.

A browser sends some cross-site requests without asking first (CORS "simple"
requests: GET, or a POST with a form or text content type), carrying whatever
ambient credentials the user has. A request proves it was preflighted by a
`Content-Type` other than the simple ones, or by one of `required_headers` (a page
on another origin cannot add a custom header without a preflight). POSTs must be
`application/json` anyway (415 otherwise), so in practice this guards GET.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

DEFAULT_REQUIRED_HEADERS = (
    "x-apollo-operation-name",
    "apollo-require-preflight",
    "x-polygraph-csrf",
)
_SIMPLE_CONTENT_TYPES = frozenset(
    {"application/x-www-form-urlencoded", "multipart/form-data", "text/plain"}
)


def preflighted(headers: Mapping[str, str], required_headers: Collection[str]) -> bool:
    content_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if content_type and content_type not in _SIMPLE_CONTENT_TYPES:
        return True
    return any(headers.get(name) for name in required_headers)


def refusal_message(required_headers: Collection[str]) -> str:
    return (
        "This operation was blocked as a potential cross-site request forgery (CSRF)."
        " Send a `Content-Type` other than application/x-www-form-urlencoded,"
        " multipart/form-data or text/plain, or a non-empty header among: "
        + ", ".join(required_headers)
        + "."
    )
