"""The open/closed state every store shares (httpx's `ClientState`)."""

from __future__ import annotations

import enum

from stores.errors import StoreMisuse


class StoreState(enum.Enum):
    UNOPENED = 1
    OPENED = 2
    CLOSED = 3


class Lifecycle:
    """Refuses use before `open()` and reopening after `aclose()`."""

    def __init__(self, name: str) -> None:
        self._name = name
        self.state = StoreState.UNOPENED

    def opening(self) -> None:
        if self.state is StoreState.OPENED:
            raise StoreMisuse(f"the {self._name} store is already open")
        if self.state is StoreState.CLOSED:
            raise StoreMisuse(
                f"cannot reopen the {self._name} store once it has been closed; create a new one"
            )

    def check_open(self) -> None:
        if self.state is StoreState.UNOPENED:
            raise StoreMisuse(f"the {self._name} store is not open; call `await store.open()`")
        if self.state is StoreState.CLOSED:
            raise StoreMisuse(f"the {self._name} store is closed")
