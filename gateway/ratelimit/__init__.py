"""Rate limits at the gateway: one charge per HTTP request, made by a schema extension
with the operation's cost just before it executes, or by a middleware when a request
that runs nothing is answered; the middleware also refuses callers known to be out
of points before their request is read."""

from gateway.ratelimit.extension import RateLimiting
from gateway.ratelimit.middleware import RateLimitMiddleware
from gateway.ratelimit.usage import Usage

__all__ = ["RateLimitMiddleware", "RateLimiting", "Usage"]
