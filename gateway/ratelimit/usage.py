"""What one request was charged, and the RateLimit headers that say so.

Headers follow draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` lists each
quota that applied (`q` points per `w` seconds), `RateLimit` what is left of it now
(`r`) and the seconds until it is whole again (`t`):

    RateLimit-Policy: "operator";q=12000;w=60
    RateLimit: "operator";r=11987;t=1
"""

from __future__ import annotations

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
        if not self._buckets:
            return []
        entries = self._buckets.values()
        policy = ", ".join(f'"{b.policy}";q={b.limit};w={b.window_s}' for b, _ in entries)
        current = ", ".join(f'"{b.policy}";r={s.remaining};t={s.reset_s}' for b, s in entries)
        # Retry-After comes with the RATE_LIMITED error (gateway.errors).
        return [("RateLimit-Policy", policy), ("RateLimit", current)]
