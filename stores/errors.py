"""Errors raised by the stores; driver exceptions never cross this boundary.

StoreError
├── StoreUnavailable   the server cannot be reached
│   ├── StoreTimeout   it was reached but did not answer in time
│   └── StoreOverloaded  every pooled connection stayed busy past the acquire timeout
├── StoreRefused       the server answered and said no
│   ├── NotFound
│   └── Conflict
└── StoreMisuse        the caller used a store wrongly (closed, not opened)
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error a store raises."""


class StoreUnavailable(StoreError):
    def __init__(self, store: str, reason: str) -> None:
        super().__init__(f"{store} is unavailable: {reason}")
        self.store = store
        self.reason = reason


class StoreTimeout(StoreUnavailable):
    """A statement or query ran past its timeout: the store is up but slow (or the
    request asked for too much)."""


class StoreOverloaded(StoreUnavailable):
    """No pooled connection came free in time: the store is up, this gateway is busy."""


class StoreRefused(StoreError):
    """The server refused the request; retrying the same request will not help."""


class NotFound(StoreRefused):
    def __init__(self, resource: str, key: object, *, field: str | None = None) -> None:
        super().__init__(f"{resource} {key} not found")
        self.resource = resource
        self.key = key
        self.field = field


class Conflict(StoreRefused):
    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidInput(StoreRefused):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class StoreMisuse(StoreError):
    """A programming error: the store was used before `open()` or after `aclose()`."""
