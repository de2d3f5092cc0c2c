"""uvicorn's httptools protocol, with a response's writes to the socket coalesced.

uvicorn writes a response's status line and headers when the app sends
`http.response.start`, and the body when it sends `http.response.body`: two `send`
system calls for every small answer, and two wake-ups of the client reading it. Here
the writes made within one turn of the event loop reach the socket as one, at the end
of that turn, so a small answer leaves in one segment. Served S1 (one primary-key read)
took 0.941 and 0.945 of the CPU per request, at 1.071x and 1.055x the rate, in two
side-by-side runs (bench/profile_notes.md).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.limits.options import DEFAULT_MAX_HEAD_BYTES, DEFAULT_READ_TIMEOUT_S
from gateway.limits.refusal import head_refusal
from resolvers.errors import ErrorCode

logger = logging.getLogger("polygraph.http")

# Past this many bytes waiting, writes go out at once: a large or streamed body reaches
# the socket, and uvicorn's flow control sees its buffer fill, as without coalescing.
_FLUSH_AT_BYTES = 64 * 1024


class CoalescedWrites(asyncio.Transport):
    """A transport that holds the writes of one loop turn and makes them one write."""

    __slots__ = ("_loop", "_pending", "_pending_bytes", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes | bytearray | memoryview] = []
        self._pending_bytes = 0

    @property
    def unwrapped(self) -> asyncio.Transport:
        return self._transport

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)
        self._pending_bytes += len(data)
        if self._pending_bytes >= _FLUSH_AT_BYTES:
            self.flush()

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def flush(self) -> None:
        """Hand what is held to the socket (a no-op when nothing is)."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._pending_bytes = 0
        if self._transport.is_closing():
            # Closed under us (the client went away): nothing can be sent any more.
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        # What was written before `close` still goes out, as with the socket's own buffer.
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = []
        self._pending_bytes = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._pending_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol on `CoalescedWrites`; a WebSocket takes the socket's
    own transport when the connection upgrades.

    It bounds what uvicorn leaves unbounded while a request is read:
    - Its line and headers past `max_head_bytes` are refused with 431 and the
      connection closed: httptools holds a header whole, however long, before the app
      sees any of it (a 50 MB header took 2.9 s to read).
    - Time: the line and headers must arrive within `read_timeout_s` of the request's
      first byte (of the connection's opening, for its first request), or they get 408
      and the connection closes; a body that pauses longer than that has its connection
      closed. uvicorn times only the idle wait between requests, so a client that sent
      a byte now and then (or nothing at all) held its connection for ever.
    Timers are armed only while a request is incomplete at the end of a read: one that
    arrives whole in one read, as most do, costs none.
    """

    max_head_bytes = DEFAULT_MAX_HEAD_BYTES
    read_timeout_s = DEFAULT_READ_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescedWrites(transport, self.loop))
        self._in_head = False
        self._head_began = False
        self._head_bytes = 0
        self._reading = False
        # The first request's head is due this long after the connection opens.
        self._first_request = True
        self._head_due = self.loop.time() + self.read_timeout_s
        self._read_timer: asyncio.TimerHandle | None = self.loop.call_at(
            self._head_due, self._read_timed_out
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._head_began = False
        super().data_received(data)
        # A head begun in this chunk is counted from the next one: a request pipelined
        # behind others is not charged for them, and the chunk is held at most once.
        if self._in_head and not self._head_began:
            self._head_bytes += len(data)
            if self._head_bytes > self.max_head_bytes:
                self._refuse_head()
                return
        if self._reading:
            due = self._head_due if self._in_head else self.loop.time() + self.read_timeout_s
            self._stop_read_timer()
            self._read_timer = self.loop.call_at(due, self._read_timed_out)
        elif self._read_timer is not None:
            self._stop_read_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_began = True
        self._head_bytes = 0
        if self._first_request:
            self._first_request = False
        else:
            self._head_due = self.loop.time() + self.read_timeout_s
        self._reading = True

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._reading = False
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._stop_read_timer()
        self._reading = False
        coalesced = self.transport
        if isinstance(coalesced, CoalescedWrites):
            coalesced.flush()
            self.transport = coalesced.unwrapped
        super().handle_websocket_upgrade()

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self.flow is not None and self.flow.read_paused:
            # uvicorn stopped reading (a request pipelined behind one being answered):
            # the wait is the server's, not the client's.
            self._read_timer = self.loop.call_later(self.read_timeout_s, self._read_timed_out)
            return
        if self._in_head:
            message = (
                f"The request line and headers did not arrive within {self.read_timeout_s:g} s"
                " (POLYGRAPH_READ_TIMEOUT_S)."
            )
            logger.info("closed a connection from %s: %s", self.client, message)
            self._answer_and_close(
                b"408 Request Timeout",
                {"message": message, "extensions": {"code": ErrorCode.REQUEST_TIMEOUT.value}},
            )
            return
        # Nothing of a request yet, or a body that stopped coming: the app, if it waits
        # for the body, hears the client left.
        if self._reading:
            logger.info("closed a connection from %s: its body paused too long", self.client)
        self._in_head = self._reading = False
        self.transport.close()

    def _refuse_head(self) -> None:
        refusal = head_refusal(self._head_bytes, self.max_head_bytes)
        logger.info("refused a request from %s: %s", self.client, refusal.message)
        self._answer_and_close(
            b"431 Request Header Fields Too Large",
            {"message": refusal.message, "extensions": refusal.extensions},
        )

    def _answer_and_close(self, status: bytes, error: dict[str, object]) -> None:
        """Answers a request the app never saw (its head is not complete) and closes."""
        self._stop_read_timer()
        self._in_head = self._reading = False
        body = orjson.dumps({"errors": [error]})
        head = [b"HTTP/1.1 ", status, b"\r\n"]
        for name, value in self.server_state.default_headers:
            head.extend([name, b": ", value, b"\r\n"])
        head.append(
            b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n"
            % len(body)
        )
        self.transport.write(b"".join([*head, body]))
        self.transport.close()


def bounded_protocol(
    max_head_bytes: int, read_timeout_s: float
) -> type[CoalescingHttpToolsProtocol]:
    """The protocol with its own bounds on reading a request."""
    default = CoalescingHttpToolsProtocol
    if (max_head_bytes, read_timeout_s) == (default.max_head_bytes, default.read_timeout_s):
        return default
    return type(
        "BoundedHttpToolsProtocol",
        (default,),
        {"max_head_bytes": max_head_bytes, "read_timeout_s": read_timeout_s},
    )
