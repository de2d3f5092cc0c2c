"""API keys and session tokens are stored as their SHA-256 digest, never as given: a
leaked table or keyspace holds nothing that signs a request."""

from __future__ import annotations

import hashlib


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()
