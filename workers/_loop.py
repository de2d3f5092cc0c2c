"""What every background worker shares: one task, started and stopped by the app
lifespan, woken early by `wake()`."""

from __future__ import annotations

import asyncio
from contextlib import suppress


class BackgroundLoop:
    """Runs `_run()` as one task from `start()` until `stop()`.

    `_run` watches `_stopping` and waits on `_wakeup` between steps; `wake()` sets it
    so that work just queued is looked at now rather than at the next poll.
    """

    def __init__(self, *, what: str, stop_timeout_s: float) -> None:
        self._what = what
        self._stop_timeout_s = stop_timeout_s
        self._task: asyncio.Task[None] | None = None
        self._wakeup = asyncio.Event()
        self._stopping = asyncio.Event()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError(f"the {self._what} is already started; stop() it first")
        self._stopping.clear()
        name = "polygraph-" + self._what.replace(" ", "-")
        self._task = asyncio.create_task(self._run(), name=name)

    async def stop(self) -> None:
        """Let the current step finish for up to `stop_timeout_s`, then cancel it."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping.set()
        self._wakeup.set()
        _, pending = await asyncio.wait({task}, timeout=self._stop_timeout_s)
        if pending:
            task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    def wake(self) -> None:
        self._wakeup.set()

    async def _run(self) -> None:
        raise NotImplementedError
