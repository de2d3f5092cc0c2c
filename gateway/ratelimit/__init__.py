"""Rate limits at the gateway: a middleware charges each HTTP request up front, a
schema extension charges the rest of an operation's cost before it executes."""

from gateway.ratelimit.extension import RateLimiting
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.usage import Usage

__all__ = ["RateLimitMiddleware", "RateLimiting", "Usage"]
