"""Graceful shutdown within a deadline, from SIGTERM (or Ctrl-C) to exit.

1. uvicorn stops accepting connections, closes idle ones and asks WebSockets to
   go away (close code 1012, "service restart"); subscriptions end with them.
2. Requests in flight get `request_grace(deadline)` to finish. Those still running
   then are cancelled (a query waiting on PostgreSQL is cancelled on the server
   too) and answer 503 `SHUTTING_DOWN`, for the client to retry elsewhere.
3. The app's lifespan stops the background work and closes the stores.
4. A gateway still running at the deadline (a request stuck in CPU work that never
   yields, a store that will not close) exits at once, saying so.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from types import FrameType

import orjson
import uvicorn
from starlette.datastructures import Headers
from starlette.types import Scope, Send

from gateway.errors import RETRY_AFTER_S
from gateway.logs import write_directly
from gateway.media import negotiate_media_type
from resolvers.errors import ErrorCode

logger = logging.getLogger("polygraph.shutdown")

# What closing the stores gets after the last request, out of the deadline.
CLOSE_RESERVE_S = 2.0
# How long the projector and the embedding filler may finish a batch once told to
# stop; a batch cut short is done again (both are idempotent).
BACKGROUND_STOP_S = CLOSE_RESERVE_S / 4
_SHUTTING_DOWN_BODY = orjson.dumps(
    {
        "errors": [
            {
                "message": "The gateway is shutting down and stopped this request before it "
                "finished; send it again.",
                "extensions": {"code": ErrorCode.SHUTTING_DOWN.value},
            }
        ]
    }
)


def request_grace(deadline_s: float) -> float:
    """How long requests in flight may run on once shutdown begins."""
    return max(deadline_s / 2, deadline_s - CLOSE_RESERVE_S)


class InFlight:
    """The tasks serving HTTP requests and WebSockets now; `drain` ends them."""

    __slots__ = ("_cut", "_tasks")

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._cut: set[asyncio.Task[object]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def track(self, task: asyncio.Task[object]) -> None:
        self._tasks.add(task)

    def untrack(self, task: asyncio.Task[object]) -> None:
        self._tasks.discard(task)
        self._cut.discard(task)

    def was_cut(self, task: asyncio.Task[object]) -> bool:
        """Whether `drain` cancelled the task (rather than the server, or a timeout)."""
        return task in self._cut

    async def drain(self, grace_s: float) -> None:
        """Wait up to `grace_s` for the requests in flight, then cancel the rest."""
        if not self._tasks:
            return
        _, running = await asyncio.wait(set(self._tasks), timeout=grace_s)
        if not running:
            return
        logger.warning(
            "cancelling %d request(s) still running %g s into shutdown"
            " (POLYGRAPH_SHUTDOWN_TIMEOUT_S)",
            len(running),
            grace_s,
        )
        for task in running:
            self._cut.add(task)
            task.cancel()


async def send_shutting_down(scope: Scope, send: Send) -> None:
    """The answer to a request that shutdown cut short before it was answered."""
    # As every other refusal: in the media type the client accepts, with the Retry-After
    # `gateway.errors` gives SHUTTING_DOWN (another replica answers by then).
    media_type = negotiate_media_type(Headers(scope=scope).get("accept"))
    retry_after = RETRY_AFTER_S[ErrorCode.SHUTTING_DOWN]
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", media_type.encode()),
                (b"content-length", str(len(_SHUTTING_DOWN_BODY)).encode()),
                (b"retry-after", str(retry_after).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": _SHUTTING_DOWN_BODY})


class GatewayServer(uvicorn.Server):
    """uvicorn, with requests drained and the whole shutdown bounded by `deadline_s`."""

    def __init__(self, config: uvicorn.Config, *, in_flight: InFlight, deadline_s: float) -> None:
        super().__init__(config)
        self.in_flight = in_flight
        self.deadline_s = deadline_s
        self._watchdog: threading.Timer | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # A signal handler: it runs even while a request hogs the event loop, which is
        # when the watchdog matters.
        if self._watchdog is None:
            self._watchdog = threading.Timer(self.deadline_s, self._exit_now)
            self._watchdog.daemon = True
            self._watchdog.start()
        super().handle_exit(sig, frame)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # uvicorn ends the process by re-raising the signal, past exit hooks: from here
        # on, log records are written as they come, none left queued.
        write_directly()
        drain = asyncio.create_task(self.in_flight.drain(request_grace(self.deadline_s)))
        try:
            await super().shutdown(sockets)
        finally:
            drain.cancel()
            await asyncio.gather(drain, return_exceptions=True)

    def _exit_now(self) -> None:
        write_directly()
        logger.error(
            "still running %g s after the signal to stop (POLYGRAPH_SHUTDOWN_TIMEOUT_S):"
            " exiting without closing the stores",
            self.deadline_s,
        )
        sys.stderr.flush()
        os._exit(1)
