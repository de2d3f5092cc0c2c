"""uvicorn's httptools protocol, with a response's writes to the socket coalesced and
what one client can hold of the server bounded (`CoalescingHttpToolsProtocol`).

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
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from gateway.limits.options import (
    DEFAULT_MAX_HEAD_BYTES,
    DEFAULT_READ_TIMEOUT_S,
    DEFAULT_SEND_TIMEOUT_S,
)
from gateway.limits.refusal import head_refusal
from resolvers.errors import ErrorCode
from resolvers.rate_limits import client_bucket_key

logger = logging.getLogger("polygraph.http")

# Past this many bytes waiting, writes go out at once: a large or streamed body reaches
# the socket, and uvicorn's flow control sees its buffer fill, as without coalescing.
_FLUSH_AT_BYTES = 64 * 1024
# How long a refused connection is kept after its answer, reading and dropping what the
# client sends meanwhile: closing a socket with unread data makes the kernel reset it,
# and the client would see the reset instead of the answer (nginx's lingering close).
_LINGER_S = 1.0
# Refused connections lingering at once, at most: past it (a flood of new connections)
# one closes as soon as it is answered, so that refusals cannot hold the descriptors
# the limit keeps for the stores.
MAX_LINGERING = 64
# Past POLYGRAPH_READ_TIMEOUT_S, a body must have come at least this fast on average
# (Kestrel asks 240 bytes/s): a 2 MiB body has eight and a half minutes more, and one
# trickled a byte at a time cannot hold its connection for ever. A response waiting to
# be taken must go at this pace too, measured over each POLYGRAPH_SEND_TIMEOUT_S.
MIN_BYTES_PER_S = 4096


@dataclass(frozen=True, slots=True)
class ConnectionRefusal:
    """Why a new connection is answered and closed before any request."""

    status: bytes
    code: ErrorCode
    setting: str
    maximum: int
    message: str

    def error(self) -> dict[str, object]:
        return {
            "message": self.message,
            "extensions": {"code": self.code.value, "limit": self.setting, "maximum": self.maximum},
        }


class Admission:
    """One connection counted by `OpenConnections`, until `release` (idempotent)."""

    __slots__ = ("_connections", "_key")

    def __init__(self, connections: OpenConnections, key: str | None) -> None:
        self._connections: OpenConnections | None = connections
        self._key = key

    def release(self) -> None:
        if self._connections is not None:
            self._connections._release(self._key)
            self._connections = None


class OpenConnections:
    """The connections one server has open: in all, at most `max_total` (0: no bound),
    and per client address (an IPv6 client's /64, as rate limits count it), at most
    `max_per_address` (0: not counted). Proxies the gateway trusts are not counted by
    address: their clients are many, and the proxy bounds them."""

    __slots__ = (
        "_by_address",
        "_exempt",
        "_warned",
        "lingering",
        "max_lingering",
        "max_per_address",
        "max_total",
        "total",
    )

    def __init__(
        self, *, max_total: int = 0, max_per_address: int = 0, exempt: Sequence[str] = ()
    ) -> None:
        self.max_total = max_total
        self.max_per_address = max_per_address
        self.total = 0
        # Refused connections reading what their client sends before they close.
        self.lingering = 0
        self.max_lingering = MAX_LINGERING
        self._exempt = [ipaddress.ip_network(entry, strict=False) for entry in exempt]
        self._by_address: dict[str, int] = {}
        # What was logged as refused (None: the total), once until one of it closes.
        self._warned: set[str | None] = set()

    def key_of(self, client: tuple[str, int] | None) -> str | None:
        """What a connection from `client` is counted as by address (None: not so)."""
        if client is None or not self.max_per_address:
            return None  # a Unix socket has no address to count by
        if self._exempt:
            try:
                address = ipaddress.ip_address(client[0])
            except ValueError:
                address = None
            if address is not None and any(address in network for network in self._exempt):
                return None
        return client_bucket_key(client[0])

    def open(self, key: str) -> int:
        return self._by_address.get(key, 0)

    def admit(self, client: tuple[str, int] | None) -> Admission | ConnectionRefusal:
        if self.max_total and self.total >= self.max_total:
            self._warn(None, "refusing connections: %d are open (POLYGRAPH_MAX_CONNECTIONS)")
            return ConnectionRefusal(
                b"503 Service Unavailable",
                ErrorCode.OVERLOADED,
                "POLYGRAPH_MAX_CONNECTIONS",
                self.max_total,
                f"The gateway holds as many connections as it may ({self.max_total:,},"
                " POLYGRAPH_MAX_CONNECTIONS). Retry shortly.",
            )
        key = self.key_of(client)
        if key is not None:
            count = self._by_address.get(key, 0)
            if count >= self.max_per_address:
                self._warn(
                    key,
                    "refusing connections from %s: %d are open"
                    " (POLYGRAPH_MAX_CONNECTIONS_PER_ADDRESS)",
                )
                return ConnectionRefusal(
                    b"429 Too Many Requests",
                    ErrorCode.RATE_LIMITED,
                    "POLYGRAPH_MAX_CONNECTIONS_PER_ADDRESS",
                    self.max_per_address,
                    f"Too many connections from this address: {count} are open, and"
                    f" {self.max_per_address} may be (POLYGRAPH_MAX_CONNECTIONS_PER_ADDRESS)."
                    " Send more requests on each connection (keep-alive), or close one.",
                )
            self._by_address[key] = count + 1
        self.total += 1
        return Admission(self, key)

    def linger(self) -> bool:
        """Whether a refused connection may linger; counted until `lingered`."""
        if self.lingering >= self.max_lingering:
            return False
        self.lingering += 1
        return True

    def lingered(self) -> None:
        self.lingering -= 1

    def _release(self, key: str | None) -> None:
        self.total -= 1
        self._warned.discard(None)
        if key is not None:
            count = self._by_address.pop(key) - 1
            if count:
                self._by_address[key] = count
            self._warned.discard(key)

    def _warn(self, key: str | None, message: str) -> None:
        if key in self._warned:
            return
        self._warned.add(key)
        if key is None:
            logger.warning(message, self.total)
        else:
            logger.warning(message, key, self._by_address.get(key, 0))


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

    It bounds what uvicorn leaves unbounded:
    - Its line and headers past `max_head_bytes` are refused with 431 and the
      connection closed: httptools holds a header whole, however long, before the app
      sees any of it (a 50 MB header took 2.9 s to read).
    - Time: the line and headers must arrive within `read_timeout_s` of the request's
      first byte (of the connection's opening, for its first request), or they get 408
      and the connection closes; a body that pauses longer than that, or comes slower
      than `min_bytes_per_s` once that long has passed, has its connection closed.
      uvicorn times only the idle wait between requests, so a client that sent a byte
      now and then (or nothing at all) held its connection for ever.
    - A response the client does not take: while the socket's buffer is past its high
      mark, it must shrink by `min_bytes_per_s` over each `send_timeout_s` (or empty),
      else the connection is aborted and what waited for the client dropped. uvicorn
      kept an untaken response (10 MB, POLYGRAPH_MAX_RESPONSE_BYTES) for as long as
      the client kept its socket open.
    - Connections, with `open_connections`: past the server's limit of open
      connections (WebSockets included) a new one gets 503, past its address's limit
      429, and is closed.
    Read timers are armed only while a request is incomplete at the end of a read (one
    that arrives whole in one read, as most do, costs none), the send timer only while
    writing is paused.
    """

    max_head_bytes = DEFAULT_MAX_HEAD_BYTES
    read_timeout_s = DEFAULT_READ_TIMEOUT_S
    send_timeout_s = DEFAULT_SEND_TIMEOUT_S
    min_bytes_per_s: float = MIN_BYTES_PER_S
    # One per server (`bounded_protocol`); None counts nothing. (`connections` is
    # uvicorn's set of this server's protocols.)
    open_connections: OpenConnections | None = None

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
        # When the body being read is due if no more of it comes (None: not timed yet).
        self._body_due: float | None = None
        # While writing is paused: the bytes waiting at the last look, and its timer.
        self._send_left = 0
        self._send_timer: asyncio.TimerHandle | None = None
        self._refused = self._lingering = False
        self._admission: Admission | None = None
        if self.open_connections is not None:
            admitted = self.open_connections.admit(self.client)
            if isinstance(admitted, Admission):
                self._admission = admitted
            else:
                self._refuse_connection(admitted)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_read_timer()
        self._stop_send_timer()
        if self._lingering and self.open_connections is not None:
            self._lingering = False
            self.open_connections.lingered()
        self._release()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # answered already; read only so that closing does not reset
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
            due = self._head_due if self._in_head else self._body_due_after(len(data))
            self._stop_read_timer()
            if due <= self.loop.time():
                # Past due already: a timer armed now could be cancelled by the next read
                # before it runs, for as long as bytes keep coming.
                self._read_timed_out()
            else:
                self._read_timer = self.loop.call_at(due, self._read_timed_out)
        elif self._read_timer is not None:
            self._stop_read_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_began = True
        self._head_bytes = 0
        self._body_due = None
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
        if self._admission is not None and self.ws_protocol_class is not None:
            # The connection stays counted until the WebSocket's protocol loses it.
            self.ws_protocol_class = _counted_websocket(self.ws_protocol_class)
        super().handle_websocket_upgrade()
        websocket = self.transport.get_protocol()
        if isinstance(websocket, CountedWebSocket):
            websocket.admission, self._admission = self._admission, None

    def _body_due_after(self, received: int) -> float:
        """When the body is due after `received` more bytes of its request: within
        `read_timeout_s` of now (a pause), and of the body's first incomplete read plus
        the time its bytes have bought at `min_bytes_per_s` (a pace)."""
        now = self.loop.time()
        if self._body_due is None:
            self._body_due = now + self.read_timeout_s
        self._body_due += received / self.min_bytes_per_s
        return min(now + self.read_timeout_s, self._body_due)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_left = self.transport.get_write_buffer_size()
            self._send_timer = self.loop.call_later(self.send_timeout_s, self._check_sending)

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def _check_sending(self) -> None:
        """Still paused `send_timeout_s` after the last look: aborts the connection
        unless the client took its share of what waits since."""
        self._send_timer = None
        if self.transport.is_closing():
            return
        left = self.transport.get_write_buffer_size()
        share = min(self._send_left, self.send_timeout_s * self.min_bytes_per_s)
        if left and self._send_left - left < share:
            logger.info(
                "aborted a connection from %s: it took %d of %d bytes waiting for it in"
                " %g s (POLYGRAPH_SEND_TIMEOUT_S)",
                self.client,
                max(self._send_left - left, 0),
                self._send_left,
                self.send_timeout_s,
            )
            self.transport.abort()
            return
        self._send_left = left
        self._send_timer = self.loop.call_later(self.send_timeout_s, self._check_sending)

    def _release(self) -> None:
        if self._admission is not None:
            self._admission.release()
            self._admission = None

    def _stop_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _refuse_connection(self, refusal: ConnectionRefusal) -> None:
        """Answers before any request, stops sending and lingers (`_LINGER_S`)."""
        self._stop_read_timer()
        self._refused = True
        self.transport.write(_answer(self, refusal.status, refusal.error(), b"retry-after: 1\r\n"))
        if self.open_connections is None or not self.open_connections.linger():
            # A flood: closed at once, though the client may then see a reset.
            self.transport.close()
            return
        self._lingering = True
        self.transport.write_eof()
        # Closed when the client closes its side (`eof_received`), or after the linger.
        self._read_timer = self.loop.call_later(_LINGER_S, self.transport.close)

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
            logger.info(
                "closed a connection from %s: its body paused too long or came too slowly",
                self.client,
            )
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
        self.transport.write(_answer(self, status, error))
        self.transport.close()


class CountedWebSocket:
    """Mixed into uvicorn's WebSocket protocol: a connection counted while it spoke
    HTTP stays counted until the WebSocket ends."""

    admission: Admission | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        if self.admission is not None:
            self.admission.release()
            self.admission = None
        super().connection_lost(exc)  # type: ignore[misc]


_COUNTED_WEBSOCKETS: dict[type[asyncio.Protocol], type[asyncio.Protocol]] = {}


def _counted_websocket(protocol: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    counted = _COUNTED_WEBSOCKETS.get(protocol)
    if counted is None:
        counted = type(f"Counted{protocol.__name__}", (CountedWebSocket, protocol), {})
        _COUNTED_WEBSOCKETS[protocol] = counted
    return counted


def _answer(
    protocol: CoalescingHttpToolsProtocol,
    status: bytes,
    error: dict[str, object],
    extra_headers: bytes = b"",
) -> bytes:
    """A GraphQL-shaped answer with `connection: close`, written by the protocol itself."""
    body = orjson.dumps({"errors": [error]})
    head = [b"HTTP/1.1 ", status, b"\r\n"]
    for name, value in protocol.server_state.default_headers:
        head.extend([name, b": ", value, b"\r\n"])
    head.append(
        b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n" % len(body)
    )
    head.append(extra_headers)
    head.append(b"\r\n")
    return b"".join([*head, body])


def bounded_protocol(
    max_head_bytes: int,
    read_timeout_s: float,
    *,
    send_timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
    max_connections: int = 0,
    max_connections_per_address: int = 0,
    trusted_proxies: Sequence[str] = (),
) -> type[CoalescingHttpToolsProtocol]:
    """The protocol of one server, with its own bounds on reading a request and taking
    a response and, unless both connection limits are 0, its own count of open
    connections."""
    default = CoalescingHttpToolsProtocol
    counted = bool(max_connections or max_connections_per_address)
    if not counted and (max_head_bytes, read_timeout_s, send_timeout_s) == (
        default.max_head_bytes,
        default.read_timeout_s,
        default.send_timeout_s,
    ):
        return default
    open_connections = (
        OpenConnections(
            max_total=max_connections,
            max_per_address=max_connections_per_address,
            exempt=trusted_proxies,
        )
        if counted
        else None
    )
    return type(
        "BoundedHttpToolsProtocol",
        (default,),
        {
            "max_head_bytes": max_head_bytes,
            "read_timeout_s": read_timeout_s,
            "send_timeout_s": send_timeout_s,
            "open_connections": open_connections,
        },
    )
