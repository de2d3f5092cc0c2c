"""Store failures that TLS is behind, described so that the cause shows."""

from __future__ import annotations

import ssl


def describe_failure(exc: BaseException) -> str:
    """`exc`'s message, or the TLS failure behind it. Drivers wrap those (redis-py
    says only "network:ConnectionError"); a certificate that does not verify must
    say so, and why, for an operator to look at the CA file and the host name."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, ssl.SSLCertVerificationError):
            why = cause.verify_message or cause.reason or "unknown reason"
            return (
                f"TLS certificate verification failed: {why} (is its CA file the one "
                "that signed the server's certificate, and does that name this host?)"
            )
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    return str(exc) or type(exc).__name__
