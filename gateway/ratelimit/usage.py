"""What one request was charged, and the RateLimit headers that say so.

Headers follow draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` lists each
quota that applied (`q` points per `w` seconds), `RateLimit` what is left of it now
(`r`) and the seconds until it is whole again (`t`):

    RateLimit-Policy: "operator";q=12000;w=60
    RateLimit: "operator";r=11987;t=1
"""

from __future__ import annotations

from functools import cache

from resolvers.rate_limits import Bucket, Outcome
from stores.redis.rate_limits import BucketState

STATE_KEY = "rate_limit"


class Usage:
    """The buckets a request was charged to, kept in `scope["state"]` while it runs."""

    __slots__ = (
        "_buckets",
        "body_points",
        "charged",
        "message",
        "owed",
        "refused",
        "retry_after_s",
    )

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[Bucket, BucketState]] = {}
        self.refused = False
        self.retry_after_s = 0
        self.message = ""
        # The request's own points and its body's, charged with its operation's cost
        # (`RateLimiting`) or, if it never executes one, when it is answered.
        self.owed = 0
        self.body_points = 0
        self.charged = False

    def record(self, outcome: Outcome) -> None:
        self.charged = True
        for bucket, state in outcome.states():
            self._buckets[bucket.policy] = (bucket, state)
        if not outcome.allowed:
            self.refused = True
            self.retry_after_s = max(self.retry_after_s, outcome.decision.retry_after_s)
            self.message = outcome.message()

    def headers(self) -> list[tuple[str, str]]:
        return [(name.decode(), value.decode()) for name, value in self.raw_headers()]

    def raw_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers as an ASGI message carries them (every response has them)."""
        if not self._buckets:
            return []
        entries = self._buckets.values()
        policy = b", ".join(_policy_value(b.policy, b.limit, b.window_s) for b, _ in entries)
        current = b", ".join(
            b'"%s";r=%d;t=%d' % (_policy_name(b.policy), state.remaining, state.reset_s)
            for b, state in entries
        )
        # Retry-After comes with the RATE_LIMITED error (gateway.errors).
        return [(b"ratelimit-policy", policy), (b"ratelimit", current)]


# Both cached by policy, of which there are a handful (the roles', anonymous, login).
@cache
def _policy_name(policy: str) -> bytes:
    return policy.encode("latin-1")


@cache
def _policy_value(policy: str, limit: int, window_s: int) -> bytes:
    """A policy's `RateLimit-Policy` entry: the same on every response charged to it."""
    return b'"%s";q=%d;w=%d' % (_policy_name(policy), limit, window_s)
