"""Bodies larger than the limit are refused with 413 before the app reads them
(`gateway.middleware.RequestLifecycle` applies the limit)."""

from __future__ import annotations

from gateway.limits.refusal import TooComplex


class BodyTooLarge(Exception):
    """Raised while a body sent without a length is read, once it passes the limit."""

    def __init__(self, received: int) -> None:
        super().__init__(f"{received:,} bytes received")
        self.received = received


def body_refusal(size: int, max_bytes: int, *, over: bool) -> TooComplex:
    """`over`: the size is what arrived before the limit was passed, not the whole body."""
    return TooComplex(
        f"The request body is {'over ' if over else ''}{size:,} bytes",
        size,
        max_bytes,
        "POLYGRAPH_MAX_BODY_BYTES",
    )
